"""Every number of the stage protocol is range-checked: out-of-range values are refused
INVALID_ARGUMENT with a reason, whether they fit the wire type (checked by the receiver) or not
(an over-long varint does not even decode), and the target keeps serving."""

from __future__ import annotations

import grpc
import pytest
import torch

from app.node.p2p.auth import sign_message
from app.node.p2p.errors import PeerRejected
from app.node.p2p.protocol import pb2
from app.node.p2p.records import LayerAnnouncement
from app.node.p2p.services import EXCHANGE
from app.node.p2p.tensor_codec import build_header
from app.node.p2p.tls import pinned_channel, probe
from app.node.runtime import stage_protocol
from app.node.runtime.p2p_transport import P2PCohort, stage_server, to_wire
from tests.p2p.helpers import run, swarm
from tests.training.training_helpers import make_stage, tiny_config

CONFIG = tiny_config()
MIDDLE = (1, 3)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("step", 2**63, "step"), ("microbatch", 4096, "microbatch"), ("layer", 2**20, "layer")])
def test_stage_numbers_out_of_range_are_refused_with_their_field(field: str, value: int, reason: str) -> None:
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (target, caller)):
            stage = make_stage(MIDDLE, CONFIG)
            target.set_stage_handler(stage_server(stage.handle, first_layer=lambda: MIDDLE[0]))
            request = stage_protocol.stage_request("forward", MIDDLE[0], {"step": 0, "mb": 0})
            setattr(request, field, value)
            with pytest.raises(PeerRejected, match=f"{reason} = {value} is out of range") as err:
                await caller.call_stage(target.address, "forward", request, to_wire([torch.zeros(1, 4, 64)]), 10)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            good = stage_protocol.stage_request("forward", MIDDLE[0], {"step": 0, "mb": 0})
            reply, out = await caller.call_stage(target.address, "forward", good, to_wire([torch.zeros(1, 4, 64)]), 10)
            assert reply.status == pb2.STAGE_OK and out["t0"].shape == (1, 4, 64)  # still serving

    run(scenario())


def test_a_round_of_2_to_the_62_is_refused_and_a_commit_step_of_2_to_the_63_too() -> None:
    async def scenario() -> None:
        async with swarm(2) as (_, (target, caller)):
            stage = make_stage(MIDDLE, CONFIG)
            target.set_stage_handler(stage_server(stage.handle, first_layer=lambda: MIDDLE[0]))
            target.set_sync_handler(P2PCohort(target, holds=lambda: MIDDLE, position=lambda: (0, 1)).handle)
            await caller.registry.announce(LayerAnnouncement(*MIDDLE, "T3", 1.0))
            with pytest.raises(PeerRejected, match=r"round = 4611686018427387904 is out of range") as err:
                await caller.call_sync(target.address, stage_protocol.sync_request(MIDDLE, 2**62, 1, 0.0),
                                       {"g": torch.zeros(2)}, 10)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            commit = stage_protocol.stage_request("commit", MIDDLE[0], {"step": 0, "microbatches": 1})
            commit.step = 2**63
            with pytest.raises(PeerRejected, match="step = ") as err:
                await caller.call_stage(target.address, "commit", commit, {}, 10)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and stage.inner_step == 0

    run(scenario())


@pytest.mark.parametrize(("number", "value"), [(5, 10**30), (4, 2**70)])  # batches, round
def test_numbers_too_big_for_the_wire_type_do_not_decode(number: int, value: int) -> None:
    """``batches = 10**30`` or ``round = 2**70`` cannot be a uint64: a stranger writing the varint by
    hand gets INVALID_ARGUMENT from the decoder, before any handler runs."""
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (target, caller)):
            seen: list[object] = []

            async def sync(caller_id: bytes, request: object, tensors: dict) -> tuple[object, dict]:
                seen.append(request)
                return pb2.SyncReply(status=pb2.STAGE_OK), {}

            target.set_sync_handler(sync)
            header, _ = build_header("sync", stage_protocol.sync_request(MIDDLE, 0, 1, 0.0), {})
            sign_message(caller.key, EXCHANGE, header, target.node_id)
            forged_sync = header.sync.SerializeToString() + _varint(number << 3) + _varint(value)
            header.ClearField("sync")
            raw = _field(1, header.SerializeToString() + _field(22, forged_sync))
            der = await probe(target.address, 5)
            async with pinned_channel(target.address, der) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in channel.stream_stream(EXCHANGE)(iter([raw]), timeout=5):
                        pass
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and seen == []

    run(scenario())
