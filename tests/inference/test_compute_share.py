"""Inference never takes more than its configured share of the node's compute."""

from __future__ import annotations

import grpc
import pytest
import torch

from app.node.p2p.errors import RpcRefusal
from app.node.p2p.services import INFERENCE_OPEN, INFERENCE_STEP
from app.node.runtime.inference_protocol import open_request, step_request
from app.node.runtime.inference_service import ComputeShare, InferenceLimits, InferenceService
from app.node.training.config import TrainingConfig
from app.node.training.stage import StageWorker
from tests.inference.helpers import RANGES, genesis_stage
from tests.p2p.helpers import run


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_refills_at_the_share_and_never_beyond_one_window() -> None:
    clock = Clock()
    share = ComputeShare(0.25, 8.0, clock)
    assert share.available() == pytest.approx(2.0)  # a full window's budget: 25 % of 8 s
    share.spend(3.0)
    assert share.wait_s() == pytest.approx(1.0 / 0.25, abs=0.01)  # 1 s in debt refills at 0.25 s/s
    clock.now += 4.0
    assert share.available() == pytest.approx(0.0, abs=1e-9)
    clock.now += 1000.0
    assert share.available() == pytest.approx(2.0)  # capped: idle time is not banked
    # over a long run, the compute spent is at most share x elapsed + one window
    spent = 0.0
    for _ in range(100):
        clock.now += share.wait_s()
        share.spend(0.5)
        spent += 0.5
    assert spent <= 0.25 * (clock.now - 1100.0) + 2.0 + 0.5


def test_a_step_past_the_share_waits_for_budget_or_is_refused_as_busy() -> None:
    clock = Clock()
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    stage = StageWorker(genesis_stage(RANGES[0]), TrainingConfig())
    service = InferenceService(lambda: stage, clock=clock, sleep=fake_sleep,
                               limits=InferenceLimits(compute_share=0.5, share_window_s=2.0, max_wait_s=3.0))
    caller = b"\x02" + b"k" * 32
    sid = b"s" * 16
    tokens = torch.tensor([[1, 2]])

    async def scenario() -> None:
        await service.handle(INFERENCE_OPEN, caller, open_request(sid, RANGES[0], 16))
        assert service.compute is not None
        service.compute.spend(2.0)  # inference already spent 1 s more than its budget (1 s)
        reply = await service.handle(INFERENCE_STEP, caller, step_request(sid, 0, tokens))
        assert reply.position == 2
        assert waits == [pytest.approx(2.0, abs=0.01)]  # 1 s of debt at 0.5 s per second
        service.compute.spend(10.0)  # far past the share: waiting would exceed max_wait_s
        with pytest.raises(RpcRefusal) as refused:
            await service.handle(INFERENCE_STEP, caller, step_request(sid, 2, tokens))
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE and refused.value.reason.startswith("busy: ")
        assert len(waits) == 1

    run(scenario(), timeout=60)
