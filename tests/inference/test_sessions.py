"""Inference sessions on real P2P nodes in one process: generation equals in-process generation;
every bound of the serving side is enforced with its own gRPC status."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
import torch

from app.crypto.keys import PrivateKey
from app.node.p2p.errors import PeerRejected
from app.node.p2p.node import P2PNode
from app.node.p2p.records import LayerAnnouncement, PeerRecord
from app.node.p2p.services import INFERENCE_OPEN, INFERENCE_STEP
from app.node.p2p.tracker import Tracker
from app.node.runtime.inference_client import RemoteGenerator
from app.node.runtime.inference_protocol import open_request, step_request
from app.node.runtime.inference_service import InferenceLimits, InferenceService, cache_bytes_per_position
from app.node.training.config import TrainingConfig
from app.node.training.stage import StageWorker
from tests.inference.helpers import ARCH, PROMPT, RANGES, genesis_stage, reference_tokens
from tests.p2p.helpers import FAST, eventually, run


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def network(services: list[InferenceService | None] | None = None, client_key: PrivateKey | None = None
                  ) -> AsyncIterator[tuple[P2PNode, list[P2PNode], list[InferenceService]]]:
    """A tracker, one holder per stage of RANGES (serving ``services`` when given) and a client."""
    tracker = Tracker(0, config=FAST)
    await tracker.start()
    nodes: list[P2PNode] = []
    served: list[InferenceService] = []
    try:
        for n, layer_range in enumerate(RANGES):
            service = (services or [None] * len(RANGES))[n]
            if service is None:
                stage = StageWorker(genesis_stage(layer_range), TrainingConfig())
                service = InferenceService(lambda s=stage: s)
            node = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=FAST)
            node.set_inference_handler(service.handle)
            await node.start()
            await node.registry.announce(LayerAnnouncement(*layer_range, "T3", 1.0, ttl=FAST.heartbeat_timeout_s))
            nodes.append(node)
            served.append(service)
        client = P2PNode(client_key or PrivateKey.generate(), trackers=[tracker.address], config=FAST)
        await client.start()
        nodes.append(client)

        async def covered() -> bool:
            return all([await client.who_holds(r[0]) for r in RANGES])

        await eventually(covered, what="every stage announced")
        yield client, nodes[:-1], served
    finally:
        for node in nodes:
            await node.stop()
        await tracker.stop()


async def _record(client: P2PNode, layer: int) -> PeerRecord:
    return [r for r in await client.who_holds(layer) if r.layer_start == layer][0]


def test_greedy_generation_through_three_nodes_equals_in_process_generation() -> None:
    expected = reference_tokens(12)

    async def scenario() -> None:
        async with network() as (client, _nodes, services):
            streamed: list[int] = []
            result = await RemoteGenerator(client, ARCH).generate(
                PROMPT, 12, temperature=0, on_token=lambda i, t: streamed.append(t))
            assert result.tokens == expected
            assert streamed == expected
            assert result.replacements == 0 and len(result.holders) == 3
            assert all(s.sessions == 0 for s in services)  # closed at the end

    run(scenario(), timeout=120)


def test_a_full_stage_refuses_a_session_with_resource_exhausted_naming_what_is_free() -> None:
    stage = StageWorker(genesis_stage(RANGES[0]), TrainingConfig())
    per_position = cache_bytes_per_position(stage.shard)
    small = InferenceService(lambda: stage, limits=InferenceLimits(max_sessions=4, cache_bytes=per_position * 40))

    async def scenario() -> None:
        async with network([small, None, None]) as (client, _nodes, _services):
            holder = await _record(client, 0)
            await client.call_inference(holder, INFERENCE_OPEN, open_request(b"a" * 16, RANGES[0], 30), 5.0)
            with pytest.raises(PeerRejected) as refused:
                await client.call_inference(holder, INFERENCE_OPEN, open_request(b"b" * 16, RANGES[0], 30), 5.0)
            assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"{per_position * 10} bytes of cache free" in str(refused.value)
            assert small.sessions == 1
            # a smaller session still fits
            await client.call_inference(holder, INFERENCE_OPEN, open_request(b"c" * 16, RANGES[0], 10), 5.0)
            assert small.reserved_bytes() == per_position * 40

    run(scenario(), timeout=120)


def test_session_belongs_to_its_opener_numbers_are_range_checked_and_idle_sessions_expire() -> None:
    clock = Clock()
    stage = StageWorker(genesis_stage(RANGES[0]), TrainingConfig())
    service = InferenceService(lambda: stage, limits=InferenceLimits(idle_timeout_s=60.0), clock=clock)

    async def scenario() -> None:
        async with network([service, None, None]) as (client, nodes, _services):
            holder = await _record(client, 0)
            other = nodes[1]  # another key: the session is not its own
            sid = b"s" * 16

            async def refused(node: P2PNode, path: str, request: object) -> grpc.StatusCode:
                with pytest.raises(PeerRejected) as exc:
                    await node.call_inference(holder, path, request, 5.0)
                return exc.value.code

            too_long = open_request(sid, RANGES[0], ARCH.max_seq + 1)
            assert await refused(client, INFERENCE_OPEN, too_long) == grpc.StatusCode.INVALID_ARGUMENT
            assert await refused(client, INFERENCE_OPEN, open_request(sid, (0, 2), 8)) == grpc.StatusCode.NOT_FOUND
            await client.call_inference(holder, INFERENCE_OPEN, open_request(sid, RANGES[0], 8), 5.0)
            tokens = torch.tensor([[1, 2, 3]])
            assert await refused(other, INFERENCE_STEP, step_request(sid, 0, tokens)) == grpc.StatusCode.NOT_FOUND
            bad_token = torch.tensor([[1, ARCH.vocab]])
            assert await refused(client, INFERENCE_STEP, step_request(sid, 0, bad_token)) == \
                grpc.StatusCode.INVALID_ARGUMENT
            hidden = torch.zeros(1, 2, ARCH.hidden)  # the first stage takes token ids, not hidden states
            assert await refused(client, INFERENCE_STEP, step_request(sid, 0, hidden)) == \
                grpc.StatusCode.INVALID_ARGUMENT
            lying = step_request(sid, 0, tokens)
            lying.data = lying.data[:-8]  # declared shape and bytes disagree
            assert await refused(client, INFERENCE_STEP, lying) == grpc.StatusCode.INVALID_ARGUMENT
            assert await refused(client, INFERENCE_STEP, step_request(sid, 1, tokens)) == grpc.StatusCode.OUT_OF_RANGE
            reply = await client.call_inference(holder, INFERENCE_STEP, step_request(sid, 0, tokens), 5.0)
            assert reply.position == 3 and list(reply.output.shape) == [1, 3, ARCH.hidden]
            past_end = torch.tensor([[1] * 6])
            assert await refused(client, INFERENCE_STEP, step_request(sid, 3, past_end)) == \
                grpc.StatusCode.OUT_OF_RANGE
            clock.now += 61.0
            assert await refused(client, INFERENCE_STEP, step_request(sid, 3, tokens[:, :1])) == \
                grpc.StatusCode.NOT_FOUND
            assert service.sessions == 0

    run(scenario(), timeout=120)


def test_a_node_not_serving_inference_is_skipped_as_busy_and_a_replica_serves() -> None:
    """Inference mode off: the holder refuses as busy; the client takes a replica of the same layers."""
    expected = reference_tokens(5)
    off_stage = StageWorker(genesis_stage(RANGES[1]), TrainingConfig())
    off = InferenceService(lambda: off_stage, serving=lambda: False)

    async def scenario() -> None:
        async with network() as (client, nodes, services):
            spare = P2PNode(PrivateKey.generate(), trackers=[nodes[0].trackers[0]], config=FAST)
            spare.set_inference_handler(off.handle)
            await spare.start()
            try:
                await spare.registry.announce(LayerAnnouncement(*RANGES[1], "T3", 1000.0,
                                                                ttl=FAST.heartbeat_timeout_s))

                async def both() -> bool:
                    return len([r for r in await client.who_holds(1) if r.layer_start == 1]) == 2

                await eventually(both, what="two holders of layer 1")
                for _ in range(3):  # whichever the router picks first, the output is the same
                    result = await RemoteGenerator(client, ARCH).generate(PROMPT, 5, temperature=0)
                    assert result.tokens == expected
                assert off.sessions == 0 and services[1].sessions == 0
            finally:
                await spare.stop()

    run(scenario(), timeout=120)
