"""The stage protocol is typed and versioned: each stage RPC refuses a request of another
stage-protocol version with FAILED_PRECONDITION naming both versions, and computes nothing."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
import torch

from app.node.p2p.errors import PeerRejected, ProtocolMismatch
from app.node.p2p.protocol import STAGE_PROTOCOL_VERSION
from app.node.p2p.records import LayerAnnouncement
from app.node.runtime import stage_protocol
from app.node.runtime.p2p_transport import P2PCohort, P2PStageTransport, stage_server, to_wire, weights_server
from app.node.training.arch_guard import ArchitectureMismatch, ArchTaggedTransport
from tests.p2p.helpers import run, swarm
from tests.training.training_helpers import ARCH, make_stage, tiny_config

WRONG = STAGE_PROTOCOL_VERSION + 98
CONFIG = tiny_config()
STAGE = (1, 3)  # a middle stage: hidden states in, hidden states out


async def _served(node, stage) -> list[str]:  # noqa: ANN001 - a P2PNode and a StageWorker
    calls: list[str] = []

    async def handle(op: str, meta: dict, tensors: list) -> tuple[dict, list]:
        calls.append(op)
        return await stage.handle(op, meta, tensors)

    async def weights(caller: bytes, meta: dict) -> dict[str, torch.Tensor]:
        calls.append("weights")
        return stage.state_for_transfer()

    node.set_stage_handler(stage_server(handle, first_layer=lambda: STAGE[0]))
    node.set_sync_handler(P2PCohort(node, holds=lambda: STAGE, position=lambda: (0, 1)).handle)
    node.set_weights_handler(weights_server(weights))
    return calls


def _requests() -> dict[str, tuple[str, object, dict]]:
    hidden = to_wire([torch.zeros(1, 4, 64)])
    step = {"step": 0, "mb": 0}
    return {
        "Forward": ("forward", stage_protocol.stage_request("forward", STAGE[0], step), hidden),
        "Backward": ("backward", stage_protocol.stage_request("backward", STAGE[0], step), hidden),
        "Commit": ("commit", stage_protocol.stage_request("commit", STAGE[0], {"step": 0, "microbatches": 1}), {}),
        "Finish": ("finish", stage_protocol.stage_request("finish", STAGE[0], {}), {}),
        "Exchange": ("sync", stage_protocol.sync_request(STAGE, 0, 1, 0.0), {"g": torch.zeros(2)}),
        "Weights": ("weights", stage_protocol.weights_request(STAGE), {}),
    }


@pytest.mark.parametrize("rpc", ["Forward", "Backward", "Commit", "Finish", "Exchange", "Weights"])
def test_each_stage_rpc_refuses_an_unknown_stage_protocol_version_naming_both(rpc: str) -> None:
    async def scenario() -> None:
        async with swarm(2) as (_, (caller, target)):
            stage = make_stage(STAGE, CONFIG)
            calls = await _served(target, stage)
            await caller.registry.announce(LayerAnnouncement(*STAGE, "T3", 1.0))  # a cohort member
            kind, request, tensors = _requests()[rpc]
            request.stage_version = WRONG
            with pytest.raises(ProtocolMismatch) as err:
                if kind == "sync":
                    await caller.call_sync(target.address, request, tensors, 5)
                elif kind == "weights":
                    await caller.fetch_weights(target.address, request, 5)
                else:
                    await caller.call_stage(target.address, kind, request, tensors, 5)
            text = str(err.value)
            assert f"version {WRONG}" in text and f"version {STAGE_PROTOCOL_VERSION}" in text
            assert calls == [] and stage.inner_step == 0
            # the same request at the right version is served (the refusal was the version's)
            request.stage_version = STAGE_PROTOCOL_VERSION
            if kind == "sync":
                reply, _ = await caller.call_sync(target.address, request, tensors, 5)
            elif kind == "weights":
                assert await caller.fetch_weights(target.address, request, 5)
            else:
                reply, _ = await caller.call_stage(target.address, kind, request, tensors, 5)
                assert calls == [kind]

    run(scenario())


def test_json_meta_is_not_a_stage_request() -> None:
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (caller, target)):
            calls = await _served(target, make_stage(STAGE, CONFIG))
            with pytest.raises(PeerRejected) as err:
                await caller.call_stage(target.address, "forward", {"op": "commit", "step": 0, "mb": 0},
                                        to_wire([torch.zeros(1, 4, 64)]), 5)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and calls == []

    run(scenario())


def test_the_architecture_tag_crosses_the_wire_and_a_mismatch_comes_back_typed() -> None:
    async def scenario() -> None:
        async with swarm(2) as (_, (caller, target)):
            stage = make_stage(STAGE, CONFIG)
            calls = await _served(target, stage)
            await target.registry.announce(LayerAnnouncement(*STAGE, "T3", 1.0))
            other = dataclasses.replace(ARCH, version=ARCH.version + 1)
            transport = ArchTaggedTransport(P2PStageTransport(caller), lambda: other)
            with pytest.raises(ArchitectureMismatch, match="runs architecture"):
                await transport.call(STAGE[0], "forward", {"driver": "x", "step": 0, "mb": 0},
                                     [torch.zeros(1, 4, 64)])
            same = ArchTaggedTransport(P2PStageTransport(caller), lambda: ARCH)
            reply = await same.call(STAGE[0], "forward", {"driver": "x", "step": 0, "mb": 0}, [torch.zeros(1, 4, 64)])
            assert reply.meta["status"] == "ok" and reply.tensors[0].shape == (1, 4, 64)
            assert calls == ["forward", "forward"] and stage.inner_step == 0

    run(scenario())
