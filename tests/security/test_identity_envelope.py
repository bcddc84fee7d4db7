"""A stranger's requests as the envelope sees them: signed for another node, unsigned, signed with
a borrowed public key, replayed across a restart. Each is refused with its status, unprocessed."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
import torch

from app.crypto.keys import PrivateKey
from app.node.p2p.auth import ReplayGuard, sign_message
from app.node.p2p.errors import PeerRejected, RpcRefusal
from app.node.p2p.node import REPLAY_FILE, P2PNode
from app.node.p2p.protocol import PROTOCOL_VERSION, pb2
from app.node.p2p.services import FORWARD, GOSSIP
from app.node.p2p.tensor_codec import build_header
from tests.p2p.helpers import FAST, run, swarm


def _gossip(key: PrivateKey, recipient: bytes, payload: bytes = b"rec") -> pb2.GossipRequest:
    request = pb2.GossipRequest(protocol_version=PROTOCOL_VERSION, topic="ledger", payloads=[payload])
    sign_message(key, GOSSIP, request, recipient)
    return request


def _recorder() -> tuple[list[bytes], object]:
    seen: list[bytes] = []

    async def handler(caller: bytes, payloads: list[bytes]) -> list[bytes]:
        seen.append(caller)
        return []

    return seen, handler


async def _forward(node: P2PNode, address: str, header: object) -> None:
    async for _ in node.client.stream(address, FORWARD, [pb2.TensorChunk(header=header)], 3):
        pass


def test_a_request_signed_for_one_node_is_refused_by_another() -> None:
    async def scenario() -> None:
        async with swarm(3, tracker=False) as (_, (a, b, c)):
            seen, handler = _recorder()
            b.set_gossip_handler("ledger", handler)
            c.set_gossip_handler("ledger", handler)
            request = _gossip(a.key, b.node_id)
            with pytest.raises(PeerRejected, match="signed for node") as err:
                await a.client.unary(c.address, GOSSIP, request, 2)
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
            await a.client.unary(b.address, GOSSIP, request, 2)  # the node it was signed for takes it
            assert seen == [a.node_id]

            header, _ = build_header("forward", {}, {"x": torch.ones(2)})
            sign_message(a.key, FORWARD, header, b.node_id)
            calls: list[bytes] = []

            async def stage(caller: bytes, kind: str, meta: dict, tensors: dict) -> tuple[dict, dict]:
                calls.append(caller)
                return {}, {}

            c.set_stage_handler(stage)
            with pytest.raises(PeerRejected) as err:
                await _forward(a, c.address, header)
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and calls == []

    run(scenario())


def test_an_unbound_signature_is_refused_for_stage_and_gossip_calls() -> None:
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (a, b)):
            seen, handler = _recorder()
            b.set_gossip_handler("ledger", handler)
            with pytest.raises(PeerRejected, match="must name its recipient") as err:
                await a.client.unary(b.address, GOSSIP, _gossip(a.key, b""), 2)
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and seen == []

    run(scenario())


def test_unsigned_and_wrongly_signed_stage_requests_are_refused_unauthenticated() -> None:
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (a, b)):
            calls: list[bytes] = []

            async def stage(caller: bytes, kind: str, meta: dict, tensors: dict) -> tuple[dict, dict]:
                calls.append(caller)
                return {}, {}

            b.set_stage_handler(stage)
            unsigned, _ = build_header("forward", {}, {})
            with pytest.raises(PeerRejected) as err:
                await _forward(a, b.address, unsigned)
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
            borrowed, _ = build_header("forward", {}, {})
            sign_message(PrivateKey.generate(), FORWARD, borrowed, b.node_id)
            borrowed.auth.public_key = a.key.public_key.data  # claims to be a
            with pytest.raises(PeerRejected) as err:
                await _forward(a, b.address, borrowed)
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert calls == []

    run(scenario())


def test_handlers_learn_the_caller_from_the_signature_only() -> None:
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (a, b)):
            callers: list[tuple[bytes, dict]] = []

            async def stage(caller: bytes, kind: str, meta: dict, tensors: dict) -> tuple[dict, dict]:
                callers.append((caller, meta))
                return {}, {}

            b.set_stage_handler(stage)
            await a.call_stage(b.address, "forward", {"node": "ff" * 32, "driver": "ff" * 32}, {}, 3)
            assert callers[0][0] == a.node_id

    run(scenario())


def test_the_replay_window_survives_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        key = PrivateKey.generate()
        async with swarm(1, tracker=False) as (_, (caller,)):
            first = P2PNode(key, config=FAST, data_dir=tmp_path)
            await first.start()
            seen, handler = _recorder()
            first.set_gossip_handler("ledger", handler)
            request = _gossip(caller.key, key.node_id)
            await caller.client.unary(first.address, GOSSIP, request, 2)
            await first.stop()
            again = P2PNode(key, config=FAST, data_dir=tmp_path)  # same node, restarted
            await again.start()
            try:
                again.set_gossip_handler("ledger", handler)
                with pytest.raises(PeerRejected, match="replayed") as err:
                    await caller.client.unary(again.address, GOSSIP, request, 2)
                assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
                await caller.client.unary(again.address, GOSSIP, _gossip(caller.key, key.node_id), 2)
                assert len(seen) == 2
            finally:
                await again.stop()

    run(scenario())


def test_the_persisted_replay_window_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / REPLAY_FILE
    guard = ReplayGuard(60.0, b"\x01" * 32, path=path, max_entries=10)
    now = time.time()
    for i in range(200):
        guard.check(b"k", int(now * 1000), i.to_bytes(16, "big"), now=now)
    guard.close()
    assert path.stat().st_size <= 2 * 10 * 24 + 24
    reloaded = ReplayGuard(60.0, b"\x01" * 32, path=path, max_entries=10)
    with pytest.raises(RpcRefusal, match="replayed"):
        reloaded.check(b"k", int(now * 1000), (199).to_bytes(16, "big"), now=now)
    reloaded.close()
