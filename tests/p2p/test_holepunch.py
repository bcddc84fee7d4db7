"""Hole punching on loopback: the DCUtR exchange through a real relay, the direct path with TLS
pinned on the peer's bound certificate, and the fallbacks. The NAT traversal itself (two
routers doing MASQUERADE) is tests/p2p/test_nat_namespaces.py, which needs root."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest
import torch

from app.crypto.keys import PrivateKey
from app.node.p2p.auth import sign_message
from app.node.p2p.client import Route
from app.node.p2p.errors import PeerRejected
from app.node.p2p.holepunch import CONNECT, PUNCH, SYNC, PunchOutcome
from app.node.p2p.holepunch_net import InvalidCandidate, own_candidates, parse_candidates
from app.node.p2p.node import P2PNode
from app.node.p2p.protocol import PROTOCOL_VERSION, pb2
from app.node.p2p.records import LayerAnnouncement
from app.node.p2p.tls import TlsIdentity

from .helpers import FAST, double, eventually, run, swarm

UNREACHABLE = "127.0.0.1:1"  # advertised by the "NATed" nodes: the tracker's dial-back fails


@contextlib.asynccontextmanager
async def hidden_pair(config=FAST, config_b=None) -> AsyncIterator[tuple[P2PNode, P2PNode, P2PNode,  # noqa: ANN001
                                                                         list[PunchOutcome]]]:
    """One public relay and two listening nodes nobody can dial (so both use the relay); yields
    (a, b, b's relay, a's punch outcomes)."""
    outcomes: list[PunchOutcome] = []
    async with swarm(1, config=config) as (tracker, (relay,)):
        a = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=config, advertise=UNREACHABLE,
                    on_punch=outcomes.append)
        b = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=config_b or config,
                    advertise=UNREACHABLE)
        await a.start()
        await b.start()
        try:
            assert a.record().address == "" and b.record().relay == relay.address
            b.set_stage_handler(double)
            yield a, b, relay, outcomes
        finally:
            await a.stop()
            await b.stop()


def test_relayed_peer_is_upgraded_to_a_direct_tls_path_that_outlives_the_relay():
    async def scenario():
        async with hidden_pair() as (a, b, relay, outcomes):
            record = b.record()
            meta, tensors = await a.call_stage(record, "forward", {"microbatch": 1}, {"x": torch.ones(8)}, timeout=5)
            assert torch.equal(tensors["y"], torch.full((8,), 2.0))  # first call: through the relay
            await eventually(lambda: _true(outcomes), what="a hole-punch outcome")
            [outcome] = outcomes
            assert outcome.direct and outcome.peer == b.node_id and outcome.attempts == 1, outcome
            assert outcome.address.endswith(tuple(f":{p}" for p in range(1, 65536))) and outcome.reason == ""
            assert b.node_id in a.client.direct
            # the relay goes away: calls to b still work, over the punched path
            await relay.kill()
            big = torch.arange(3 << 18, dtype=torch.float32)
            meta, tensors = await a.call_stage(record, "forward", {"microbatch": 2}, {"x": big}, timeout=10)
            assert meta["microbatch"] == 2 and torch.equal(tensors["y"], big * 2)
            assert (await a.ping(record)).node_id == b.node_id

    run(scenario())


def test_peer_that_does_not_punch_stays_on_the_relay_without_further_attempts():
    async def scenario():
        no_punch = dataclasses.replace(FAST, hole_punching=False)
        config = dataclasses.replace(FAST, punch_attempts=2)
        async with hidden_pair(config, config_b=no_punch) as (a, b, _relay, outcomes):
            await a.call_stage(b.record(), "forward", {"microbatch": 1}, {"x": torch.ones(4)}, timeout=5)
            await eventually(lambda: _true(outcomes), what="a hole-punch outcome")
            [outcome] = outcomes
            # refused as not implemented: no second attempt, it would be refused the same way
            assert not outcome.direct and outcome.attempts == 1 and "UNIMPLEMENTED" in outcome.reason, outcome
            assert b.node_id not in a.client.direct
            # still served through the relay, and not tried again while it rests
            meta, _ = await a.call_stage(b.record(), "forward", {"microbatch": 2}, {"x": torch.ones(4)}, timeout=5)
            assert meta["microbatch"] == 2
            await asyncio.sleep(0)
            assert len(outcomes) == 1 and b.node_id not in a.puncher.in_progress

    run(scenario())


def test_answer_with_a_certificate_bound_to_another_node_is_refused():
    async def scenario():
        async with hidden_pair(dataclasses.replace(FAST, punch_attempts=1)) as (a, b, _relay, outcomes):
            b.puncher.tls = TlsIdentity.create(PrivateKey.generate())  # b lies about its certificate
            await a.call_stage(b.record(), "forward", {"microbatch": 1}, {"x": torch.ones(4)}, timeout=5)
            await eventually(lambda: _true(outcomes), what="a hole-punch outcome")
            [outcome] = outcomes
            assert not outcome.direct and "bound to another node" in outcome.reason, outcome
            assert b.node_id not in a.client.direct

    run(scenario())


async def _true(items: list) -> bool:
    return bool(items)


def test_candidate_addresses_from_a_peer_are_bounded_and_validated():
    assert parse_candidates(["203.0.113.2:4000", "203.0.113.2:4000", "[2001:db8::1]:5"],
                            allow_loopback=False) == [("203.0.113.2", 4000), ("2001:db8::1", 5)]
    # single bad entries are dropped; no good one left is an error naming why
    assert parse_candidates(["example.com:80", "10.0.0.1:99"], allow_loopback=False) == [("10.0.0.1", 99)]
    for bad in (["127.0.0.1:80"], ["0.0.0.0:80"], ["224.0.0.1:80"], ["255.255.255.255:80"], ["1.2.3.4:0"],
                ["1.2.3.4:65536"], ["1.2.3.4"], ["169.254.1.1:80"], ["2001:db8::1:80"], ["1.2.3.4:" + "9" * 70],
                ["example.com:80"], []):
        with pytest.raises(InvalidCandidate):
            parse_candidates(bad, allow_loopback=False)
    with pytest.raises(InvalidCandidate, match="at most"):
        parse_candidates([f"10.0.0.{i}:80" for i in range(1, 10)], allow_loopback=False)
    assert parse_candidates(["127.0.0.1:80"], allow_loopback=True) == [("127.0.0.1", 80)]
    assert own_candidates("203.0.113.2", "192.168.1.2", 4000) == ["203.0.113.2:4000", "192.168.1.2:4000"]
    assert own_candidates("", "0.0.0.0", 4000) == []


def test_hidden_node_without_a_server_never_punches():
    async def scenario():
        async with swarm(1) as (tracker, (relay,)):
            node = P2PNode(PrivateKey.generate(), trackers=[tracker.address], listen=False, config=FAST)
            await node.start()
            try:
                assert node.puncher is None  # no server: nothing a punched connection could reach
                await node.registry.announce(LayerAnnouncement(0, 1, "T4", 1.0))
            finally:
                await node.stop()

    run(scenario())


def test_hostile_connects_are_refused_before_any_port_is_opened():
    async def scenario():
        async with hidden_pair() as (a, b, relay, _outcomes):
            route = Route(relay.address, target=b.node_id)
            hostile = PrivateKey.generate()  # a's own background punch towards b may be under way

            async def connect(message) -> grpc.StatusCode:  # noqa: ANN001
                with pytest.raises(PeerRejected) as err:
                    await a.client.unary(route, PUNCH, message, timeout=5)
                return err.value.code

            unsigned = pb2.PunchMessage(protocol_version=PROTOCOL_VERSION, type=CONNECT, addresses=["127.0.0.1:9"])
            assert await connect(unsigned) == grpc.StatusCode.UNAUTHENTICATED
            too_many = pb2.PunchMessage(protocol_version=PROTOCOL_VERSION, type=CONNECT,
                                        addresses=[f"127.0.0.{i}:9" for i in range(1, 10)])
            sign_message(hostile, PUNCH, too_many, b.node_id)
            assert await connect(too_many) == grpc.StatusCode.INVALID_ARGUMENT
            names = pb2.PunchMessage(protocol_version=PROTOCOL_VERSION, type=CONNECT, addresses=["localhost:9"])
            sign_message(hostile, PUNCH, names, b.node_id)
            assert await connect(names) == grpc.StatusCode.INVALID_ARGUMENT
            sync_first = pb2.PunchMessage(protocol_version=PROTOCOL_VERSION, type=SYNC)
            assert await connect(sync_first) == grpc.StatusCode.INVALID_ARGUMENT
            assert hostile.node_id not in b.puncher._answering  # nothing left waiting or dialling

    run(scenario())


def test_direct_path_is_used_only_if_its_server_proves_the_certificate_that_was_sent():
    async def scenario():
        async with hidden_pair(dataclasses.replace(FAST, punch_attempts=2)) as (a, b, _relay, outcomes):
            # validly bound to b's key, but not the certificate b's server presents: the TCP
            # connection forms, gRPC's TLS handshake over it refuses the server, nothing moves
            b.puncher.tls = TlsIdentity.create(b.key)
            await a.call_stage(b.record(), "forward", {"microbatch": 1}, {"x": torch.ones(4)}, timeout=5)
            await eventually(lambda: _true(outcomes), what="a hole-punch outcome")
            [outcome] = outcomes
            assert not outcome.direct and "TLS or the first call failed" in outcome.reason, outcome
            assert outcome.attempts == 2  # worth retrying (the path may have broken): up to the bound
            assert b.node_id not in a.client.direct
            meta, _ = await a.call_stage(b.record(), "forward", {"microbatch": 2}, {"x": torch.ones(4)}, timeout=5)
            assert meta["microbatch"] == 2  # still served, through the relay

    run(scenario())
