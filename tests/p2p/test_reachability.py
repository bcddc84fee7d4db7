"""The reachability self-test (p2p/reachability.py) between real nodes and a real tracker on this
machine: the tracker dials the node back, so each verdict comes from what actually answered."""

from __future__ import annotations

import pytest

from app.crypto.keys import PrivateKey
from app.node.p2p.addresses import primary_address
from app.node.p2p.node import P2PNode
from app.node.p2p.reachability import self_test

from .helpers import FAST, run, swarm


def test_a_node_on_loopback_only_is_reachable_from_this_computer_only():
    async def scenario():
        async with swarm(0) as (tracker, _):
            node = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=FAST)
            await node.start()
            try:
                result = await self_test(node)
                assert result.verdict == "this_computer" and not result.reachable
                assert result.address == f"127.0.0.1:{node.port}"
            finally:
                await node.stop()

    run(scenario())


@pytest.mark.skipif(not primary_address(), reason="this machine has no network address besides loopback")
def test_the_tracker_dialling_back_makes_it_direct_and_without_a_tracker_only_the_lan_is_claimed():
    async def scenario():
        async with swarm(0) as (tracker, _):
            node = P2PNode(PrivateKey.generate(), host="0.0.0.0", trackers=[tracker.address], config=FAST)
            lone = P2PNode(PrivateKey.generate(), host="0.0.0.0", config=FAST)
            await node.start()
            await lone.start()
            try:
                result = await self_test(node)
                assert result.verdict == "direct" and result.reachable and result.trackers_answered == 1
                assert result.observed == "127.0.0.1"  # the tracker saw us come from loopback
                local = await self_test(lone, lan_peers=2)
                assert local.verdict == "local_network" and local.lan_peers == 2
                assert local.address == f"{primary_address()}:{lone.port}"
            finally:
                await node.stop()
                await lone.stop()

    run(scenario())


def test_an_address_nobody_can_dial_is_relayed_when_a_peer_relays_and_unreachable_otherwise():
    async def scenario():
        async with swarm(1) as (tracker, _):
            # what it believes its address is, but nothing listens there: the tracker cannot dial it
            relayed = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=FAST,
                              advertise="127.0.0.1:1")
            await relayed.start()
            try:
                result = await self_test(relayed)
                assert result.verdict == "relay" and result.relay == relayed.relay_address != ""
            finally:
                await relayed.stop()
        async with swarm(0) as (tracker, _):
            stranded = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=FAST,
                               advertise="127.0.0.1:1")
            await stranded.start()
            try:
                result = await self_test(stranded)
                assert result.verdict == "unreachable" and not result.reachable and result.trackers_answered == 1
            finally:
                await stranded.stop()

    run(scenario())


def test_peers_report_the_address_they_saw_and_the_one_most_agree_on_is_observed():
    async def scenario():
        from app.node.p2p.reachability import observed_by_peers

        async with swarm(3, tracker=False) as (_, nodes):
            me, *others = nodes
            for other in others:
                await me.ping(other.address)
            assert set(me.observed_by.values()) == {"127.0.0.1"}  # each peer saw us on loopback
            assert observed_by_peers(me) == "127.0.0.1"
            me.observed_by[b"\x01" * 32] = "203.0.113.9"  # one dissenting peer does not outvote two
            assert observed_by_peers(me) == "127.0.0.1"

    run(scenario())


def test_a_reported_address_is_taken_only_as_a_plain_ipv4_address():
    from app.node.p2p.addresses import reported_host

    assert reported_host("192.0.2.7") == "192.0.2.7"
    for junk in ("", "999.1.1.1", "192.0.2.7:80", "example.org", "x" * 10_000, "::1", "1.2.3.4 "):
        assert reported_host(junk) == ""
