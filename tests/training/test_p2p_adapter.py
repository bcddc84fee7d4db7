"""The runtime's adapter between training and the P2P node: wire format and strict parsing."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import torch

from app.node.p2p.errors import RpcRefusal
from app.node.p2p.protocol import pb2
from app.node.runtime.p2p_transport import from_wire, stage_server, to_wire
from app.node.runtime.stage_protocol import stage_request
from app.node.training.transport import GiveUp


def test_token_ids_cross_the_wire_exactly_as_float32_and_come_back_as_int64() -> None:
    ids = torch.tensor([[0, 265, 1 << 20]], dtype=torch.long)
    hidden = torch.randn(1, 3, 8)
    wire = to_wire([hidden, ids])
    assert set(wire) == {"t0", "i1"} and wire["i1"].dtype == torch.float32
    back = from_wire(wire)
    assert torch.equal(back[0], hidden) and back[1].dtype == torch.long and torch.equal(back[1], ids)


@pytest.mark.parametrize("bad", [
    {"t1": torch.zeros(1)},  # gap: no t0
    {"i0": torch.tensor([0.5])},  # not an integer
    {"i0": torch.tensor([-1.0])},  # negative id
    {"i0": torch.tensor([float(1 << 25)])},  # beyond exact float32 integers
])
def test_malformed_wire_tensors_are_refused_with_a_reason(bad: dict[str, torch.Tensor]) -> None:
    with pytest.raises(GiveUp):
        from_wire(bad)


def test_stage_server_turns_training_errors_into_refusals_and_checks_the_op() -> None:
    async def handler(op: str, meta: dict, tensors: list) -> tuple[dict, list]:
        if op == "backward":
            raise ValueError("gradient shape mismatch")
        return {"status": "ok", "inner_step": 7, "seen": (op, meta["driver"], meta["step"])}, tensors

    serve = stage_server(handler)
    caller = b"\x01" * 32
    commit = stage_request("commit", 0, {"step": 3, "microbatches": 2, "driver": "ff" * 32})
    reply, out = asyncio.run(serve(caller, "commit", commit, {}))
    assert isinstance(reply, pb2.CommitReply) and reply.status == pb2.STAGE_OK and reply.inner_step == 7
    assert out == {}
    with pytest.raises(RpcRefusal, match="gradient shape"):
        asyncio.run(serve(caller, "backward", stage_request("backward", 0, {"step": 0, "mb": 0}), {}))
    with pytest.raises(RpcRefusal, match="typed") as err:
        asyncio.run(serve(caller, "forward", {"op": "format-disk"}, {}))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
