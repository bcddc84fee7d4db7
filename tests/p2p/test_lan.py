"""LAN discovery (p2p/lan.py) between real nodes on 127.0.0.1: mDNS on loopback, TLS-pinned dials."""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
from collections.abc import AsyncIterator

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from app.crypto.keys import PrivateKey
from app.node.events import Event, PeerJoined
from app.node.p2p.lan import LanDiscovery, lan_address, local_networks, on_networks, parse_txt
from app.node.runtime.network import NetworkService
from tests.p2p.helpers import FAST, eventually, run

LOOPBACK = ("127.0.0.1",)
FAST_P2P = {"heartbeat_interval_s": FAST.heartbeat_interval_s, "heartbeat_timeout_s": FAST.heartbeat_timeout_s,
            "use_upnp": False, "lan_wait_s": 0.0}


def private_service_type() -> str:
    """A service type no other test run on this machine's loopback advertises."""
    return f"_ns{secrets.token_hex(4)}._tcp.local."


@contextlib.asynccontextmanager
async def lan_node(service: str, events: list[Event], **p2p: object) -> AsyncIterator[NetworkService]:
    net = NetworkService.open(PrivateKey.generate(), host="127.0.0.1", port=0, trackers=(), listen=True,
                              p2p={**FAST_P2P, **p2p}, emit=events.append, lan_interfaces=LOOPBACK,
                              lan_service=service)
    await net.start("T3", 2)
    try:
        yield net
    finally:
        await net.stop()


def test_two_nodes_without_a_tracker_find_each_other_by_mdns_and_become_peers():
    async def scenario() -> None:
        service = private_service_type()
        events_a: list[Event] = []
        events_b: list[Event] = []
        async with lan_node(service, events_a) as a, lan_node(service, events_b) as b:
            assert a.lan is not None and a.lan.active and b.lan is not None and b.lan.active

            async def each_sees_the_other() -> bool:
                ids_a = {r.node_id.hex() for r in await a.peers()}
                ids_b = {r.node_id.hex() for r in await b.peers()}
                # each also verified the other's advertisement itself (a ping from the other side
                # alone puts it in the DHT table first)
                verified = b.node.node_id in a.lan.verified and a.node.node_id in b.lan.verified
                return b.node_id in ids_a and a.node_id in ids_b and verified

            await eventually(each_sees_the_other, what="both nodes list and verified each other as peers")
            # learned through a verified ping: the record is the peer's own, signed, TLS-bound one
            record = a.lan.verified[b.node.node_id]
            assert record.address == b.node.address and record.tls == b.node.tls.fingerprint

            async def joined_events() -> bool:
                return any(isinstance(e, PeerJoined) and e.node_id == b.node_id for e in events_a)

            await eventually(joined_events, what="the UI hears PeerJoined for the LAN peer")
            # no tracker, but a peer on this network: neither is a network of its own any more
            assert not a.solo and not b.solo

    run(scenario(), timeout=120)


def test_a_node_with_no_tracker_looks_on_the_lan_before_starting_alone_and_finds_a_peer_there():
    async def scenario() -> None:
        service = private_service_type()
        async with lan_node(service, []) as first:
            assert first.solo  # nobody else yet: it starts a genesis network of its own
            # the second one waits for discovery (the bound is only a hang guard): when start()
            # returns it has verified the first, so its planner joins instead of planning alone
            async with lan_node(service, [], lan_wait_s=60.0) as second:
                assert first.node.node_id in second.lan.verified
                assert not second.solo

                async def first_noticed() -> bool:
                    return second.node.node_id in first.lan.verified

                await eventually(first_noticed, what="the first node verifies the second")
                assert not first.solo  # the lone node now trains with the one it found

    run(scenario(), timeout=120)


def test_an_advertisement_claiming_another_identity_is_dialled_pinned_and_refused():
    async def scenario() -> None:
        service = private_service_type()
        honest_events: list[Event] = []
        liar_key = PrivateKey.generate()
        # the honest node does not advertise itself (discovery off); the liar advertises its
        # port under an id that is not the node's own
        async with lan_node(service, [], lan_discovery=False) as honest, \
                lan_node(service, honest_events) as browser:
            assert honest.lan is None
            zc = AsyncZeroconf(interfaces=list(LOOPBACK), ip_version=IPVersion.V4Only)
            name = f"liar.{service}"
            info = AsyncServiceInfo(service, name, addresses=[socket.inet_aton("127.0.0.1")],
                                    port=honest.node.port, server="liar.local.",
                                    properties={"id": liar_key.node_id.hex(), "tls": "00" * 32})
            await zc.async_register_service(info)
            try:
                assert browser.lan is not None

                async def refused() -> bool:
                    return name in browser.lan.rejected

                await eventually(refused, what="the lying advertisement is checked and refused")
                # the TLS pin caught it: the server there proved the honest node, not the claimed one
                assert honest.node.node_id.hex()[:16] in browser.lan.rejected[name]
                assert liar_key.node_id not in browser.lan.verified
                assert honest.node.node_id not in browser.lan.verified  # it was never advertised honestly
                assert all(r.node_id != liar_key.node_id for r in await browser.peers())
            finally:
                await zc.async_unregister_service(info)
                await zc.async_close()

    run(scenario(), timeout=120)


def test_lan_discovery_stays_off_where_no_other_computer_could_dial_the_node():
    async def scenario() -> None:
        off = NetworkService.open(PrivateKey.generate(), host="127.0.0.1", port=0, trackers=(), listen=True,
                                  p2p={**FAST_P2P, "lan_discovery": False}, emit=lambda _e: None)
        assert off.lan is None
        loopback_only: list[Event] = []
        net = NetworkService.open(PrivateKey.generate(), host="127.0.0.1", port=0, trackers=(), listen=True,
                                  p2p=FAST_P2P, emit=loopback_only.append)
        await net.start("T3", 2)
        try:
            assert net.lan is not None and not net.lan.active  # bound to loopback: nothing advertised
        finally:
            await net.stop()

    run(scenario(), timeout=60)


@pytest.mark.parametrize("host, expected", [("192.168.1.7", "192.168.1.7"), ("127.0.0.1", ""),
                                            ("0.0.0.0", ""), ("::1", ""), ("example.org", ""), ("", "")])
def test_only_a_concrete_lan_address_is_advertised(host: str, expected: str):
    assert lan_address(host) == expected


def test_txt_records_are_parsed_as_untrusted_input():
    node_id, tls = bytes(range(32)), bytes(32)
    assert parse_txt({b"id": node_id.hex().encode(), b"tls": tls.hex().encode()}) == (node_id, tls)
    assert parse_txt({b"id": node_id.hex().encode()}) == (node_id, b"")
    for bad in ({}, {b"id": b"zz"}, {b"id": b"ab" * 31}, {b"id": node_id.hex().encode(), b"tls": b"00"},
                {b"id": b"\xff" * 64}, {b"id": None}):
        assert parse_txt(bad) is None


def test_discovery_of_a_node_that_is_not_listening_advertises_nothing():
    net = NetworkService.open(PrivateKey.generate(), host="127.0.0.1", port=0, trackers=(), listen=False,
                              p2p=FAST_P2P, emit=lambda _e: None, lan_interfaces=LOOPBACK)
    assert isinstance(net.lan, LanDiscovery) and net.lan.addresses() == ()


def test_an_interface_without_multicast_leaves_discovery_off_and_says_why():
    async def scenario() -> None:
        net = NetworkService.open(PrivateKey.generate(), host="127.0.0.1", port=0, trackers=(), listen=True,
                                  p2p=FAST_P2P, emit=lambda _e: None, lan_interfaces=("10.255.255.1",),
                                  lan_service=private_service_type())
        await net.start("T3", 2)  # the node itself starts and serves
        try:
            assert net.lan is not None and not net.lan.active
            assert net.lan.describe().startswith("off: mDNS could not start on 10.255.255.1")
            assert net.node.address
        finally:
            await net.stop()

    run(scenario(), timeout=60)


def test_advertised_addresses_are_dialled_only_on_the_networks_the_node_listens_on():
    loopback = local_networks(LOOPBACK)
    assert loopback == (ipaddress.IPv4Network("127.0.0.0/8"),)
    assert on_networks("127.0.0.2", loopback)
    assert not on_networks("8.8.8.8", loopback) and not on_networks("not-an-ip", loopback)
    assert local_networks(("10.255.255.1",)) == (ipaddress.IPv4Network("10.255.255.1/32"),)  # no such interface
