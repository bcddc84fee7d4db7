"""A micro-batch belongs to the driver that opened it: the stage keys its work by the verified
caller, so a stranger's backward or commit cannot touch an honest driver's step."""

from __future__ import annotations

import grpc
import pytest
import torch

from app.node.p2p.errors import PeerRejected
from app.node.p2p.protocol import pb2
from app.node.runtime import stage_protocol
from app.node.runtime.p2p_transport import stage_server, to_wire
from tests.p2p.helpers import run, swarm
from tests.training.training_helpers import make_stage, patterned_batch, tiny_config

CONFIG = tiny_config()
HEAD = (2, 4)


async def _forward(node, target, step: int, mb: int, hidden: torch.Tensor, targets: torch.Tensor):  # noqa: ANN001
    request = stage_protocol.stage_request("forward", HEAD[0], {"step": step, "mb": mb})
    reply, _ = await node.call_stage(target.address, "forward", request,
                                     to_wire([hidden, targets]), 10)
    return reply


async def _commit(node, target, step: int, microbatches: int):  # noqa: ANN001
    request = stage_protocol.stage_request("commit", HEAD[0], {"step": step, "microbatches": microbatches})
    reply, _ = await node.call_stage(target.address, "commit", request, {}, 10)
    return reply


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    batch = patterned_batch(CONFIG, 1)
    return torch.randn(batch.shape[0], CONFIG.seq_len, 64, generator=gen), batch[:, 1:]


async def _honest_step(attack: bool) -> tuple[str, int, list]:
    async with swarm(3, tracker=False) as (_, (target, driver, stranger)):
        stage = make_stage(HEAD, CONFIG)
        target.set_stage_handler(stage_server(stage.handle, first_layer=lambda: HEAD[0]))
        hidden, targets = _inputs()
        answers = []
        await _forward(driver, target, 0, 0, hidden, targets)  # the driver opens micro-batch 0 of step 0
        if attack:
            # the stranger commits the driver's step, and sends a backward "for" its micro-batch
            reply = await _commit(stranger, target, 0, 1)
            answers.append((reply.status, list(reply.missing)))
            backward = stage_protocol.stage_request("backward", HEAD[0], {"step": 0, "mb": 0})
            reply, _ = await stranger.call_stage(target.address, "backward", backward,
                                                 to_wire([torch.full_like(hidden, 1e6)]), 10)
            answers.append((reply.status, []))
            assert stage.inner_step == 0  # nothing applied
            with pytest.raises(PeerRejected) as err:  # a commit of no micro-batch at all
                await _commit(stranger, target, 0, 0)
            answers.append((err.value.code, []))
        reply = await _commit(driver, target, 0, 1)
        assert reply.status == pb2.STAGE_OK and stage.inner_step == 1
        return stage.weights_hash(), stage.inner_step, answers


def test_a_stranger_cannot_commit_or_backward_a_micro_batch_it_did_not_open() -> None:
    clean_hash, _, _ = run(_honest_step(attack=False))
    hash_after, steps, answers = run(_honest_step(attack=True))
    assert answers == [(pb2.STAGE_MISSING, [0]), (pb2.STAGE_NEED_INPUT, []),
                       (grpc.StatusCode.INVALID_ARGUMENT, [])]
    assert steps == 1 and hash_after == clean_hash  # the honest step is exactly the clean run's
