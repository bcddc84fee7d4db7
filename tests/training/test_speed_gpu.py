"""The CUDA defaults of training/speed.py (run with ``pytest -m gpu``; CI has no GPU)."""

from __future__ import annotations

import pytest
import torch

from app.node.model.architecture import ModelArchitecture
from app.node.model.shard import ModelShard, lm_loss
from app.node.training.speed import SpeedPlan, apply_speed, autocast, plan_speed
from app.node.training.transport import OP_COMMIT, OP_FORWARD
from tests.training.training_helpers import ARCH, make_stage, tiny_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _split(model: ModelShard, bounds: list[tuple[int, int]]) -> list[ModelShard]:
    stages = []
    for n, (a, b) in enumerate(bounds):
        stage = ModelShard(model.architecture, a, b, with_embedding=n == 0, with_head=n == len(bounds) - 1)
        stage.load_state_dict(model.state_dict(), strict=False)
        stages.append(stage)
    return stages


def test_cuda_bf16_autocast_pipeline_matches_whole_model_loosely() -> None:
    torch.manual_seed(0)
    arch = ModelArchitecture.tiny()
    whole = ModelShard.full(arch).cuda()
    stages = [s.cuda() for s in _split(whole, [(0, 2), (2, 4)])]
    ids = torch.randint(0, 256, (2, 32), device="cuda")
    with autocast("cuda"):
        loss = lm_loss(whole(ids[:, :-1]), ids[:, 1:])
        pipe = lm_loss(stages[1](stages[0](ids[:, :-1])), ids[:, 1:])
    assert torch.isfinite(loss) and abs(loss.item() - pipe.item()) < 1e-2


def test_default_cuda_stage_trains_compiled_in_bf16_close_to_float32() -> None:
    config = tiny_config(micro_batches=1)
    batch = torch.randint(0, ARCH.vocab, (config.batch_size, 33), generator=torch.Generator().manual_seed(1))
    ids, targets = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
    losses = {}
    for name, plan in (("fp32", SpeedPlan()), ("default", None)):
        stage = make_stage((0, ARCH.layers), config, device="cuda", speed=plan)
        run = []
        for step in range(4):
            meta, _ = stage.handle_sync(OP_FORWARD, {"driver": "d", "step": step, "mb": 0}, [ids, targets])
            stage.handle_sync(OP_COMMIT, {"driver": "d", "step": step, "microbatches": 1}, [])
            run.append(meta["loss"])
        losses[name] = run
    assert stage.speed == plan_speed("cuda") and stage.speed.autocast_bf16 and stage.speed.compile
    assert losses["default"][-1] < losses["default"][0]
    assert losses["default"] == pytest.approx(losses["fp32"], rel=3e-2)


def test_compile_on_cuda_does_not_fall_back() -> None:
    shard = ModelShard.full(ARCH).cuda()
    reporter = apply_speed(shard, SpeedPlan(autocast_bf16=True, compile=True))
    with autocast("cuda"):
        lm_loss(shard(torch.randint(0, 256, (2, 16), device="cuda")), torch.randint(0, 256, (2, 16),
                                                                                    device="cuda")).backward()
    assert reporter.failure is None
