"""Signed requests over real sockets: accepted when valid, refused (and never processed) otherwise."""

import time

import grpc
import pytest

from app.crypto.keys import PrivateKey
from app.node.p2p.auth import sign_message
from app.node.p2p.errors import PeerRejected, ProtocolMismatch
from app.node.p2p.protocol import PROTOCOL_VERSION, pb2
from app.node.p2p.services import GOSSIP

from .helpers import run, swarm


def _gossip_request(key: PrivateKey, payloads: list[bytes], recipient: bytes) -> pb2.GossipRequest:
    request = pb2.GossipRequest(protocol_version=PROTOCOL_VERSION, topic="ledger", payloads=payloads)
    sign_message(key, GOSSIP, request, recipient)
    return request


async def _served_pair():
    seen: list[tuple[bytes, list[bytes]]] = []

    async def on_gossip(sender: bytes, payloads: list[bytes]) -> list[bytes]:
        seen.append((sender, payloads))
        return [b"you-lack-this"]

    return seen, on_gossip


def test_signed_request_is_accepted_and_sender_is_identified():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (a, b)):
            seen, handler = await _served_pair()
            b.set_gossip_handler("ledger", handler)
            answer = await a.gossip(b.address, "ledger", [b"rec1", b"rec2"], timeout=2)
            assert answer == [b"you-lack-this"]
            assert seen == [(a.node_id, [b"rec1", b"rec2"])]

    run(scenario())


def test_forged_request_is_refused_unauthenticated_and_not_processed():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (a, b)):
            seen, handler = await _served_pair()
            b.set_gossip_handler("ledger", handler)
            request = _gossip_request(a.key, [b"pay 1 NEURO"], b.node_id)
            request.payloads[0] = b"pay 1000 NEURO"  # tampered after signing
            with pytest.raises(PeerRejected) as err:
                await a.client.unary(b.address, GOSSIP, request, 2)
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
            impostor = _gossip_request(PrivateKey.generate(), [b"x"], b.node_id)
            impostor.auth.public_key = a.key.public_key.data  # claims to be a
            with pytest.raises(PeerRejected) as err:
                await a.client.unary(b.address, GOSSIP, impostor, 2)
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert seen == []

    run(scenario())


def test_unsigned_request_is_refused():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (a, b)):
            seen, handler = await _served_pair()
            b.set_gossip_handler("ledger", handler)
            request = pb2.GossipRequest(protocol_version=PROTOCOL_VERSION, topic="ledger", payloads=[b"x"])
            with pytest.raises(PeerRejected) as err:
                await a.client.unary(b.address, GOSSIP, request, 2)
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert seen == []

    run(scenario())


def test_replayed_request_is_refused_permission_denied():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (a, b)):
            seen, handler = await _served_pair()
            b.set_gossip_handler("ledger", handler)
            request = _gossip_request(a.key, [b"once"], b.node_id)
            await a.client.unary(b.address, GOSSIP, request, 2)
            with pytest.raises(PeerRejected) as err:
                await a.client.unary(b.address, GOSSIP, request, 2)
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert len(seen) == 1

    run(scenario())


def test_stale_timestamp_is_refused_even_with_a_valid_signature():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (a, b)):
            seen, handler = await _served_pair()
            b.set_gossip_handler("ledger", handler)
            request = pb2.GossipRequest(protocol_version=PROTOCOL_VERSION, topic="ledger", payloads=[b"old"])
            sign_message(a.key, GOSSIP, request, b.node_id, timestamp=time.time() - 3600)  # signed an hour ago
            with pytest.raises(PeerRejected) as err:
                await a.client.unary(b.address, GOSSIP, request, 2)
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert seen == []

    run(scenario())


def test_incompatible_protocol_version_gets_a_clear_refusal():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (a, b)):
            request = pb2.PingRequest(protocol_version=PROTOCOL_VERSION + 7)
            with pytest.raises(ProtocolMismatch, match="update NeuroShard"):
                await a.client.unary(b.address, "/neuroshard.v1.Dht/Ping", request, 2)

    run(scenario())
