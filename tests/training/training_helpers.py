"""Shared builders for the training tests: tiny stages wired through a LocalTransport."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from app.node.model.architecture import ModelArchitecture
from app.node.training.config import TrainingConfig
from app.node.training.pipeline import PipelineDriver
from app.node.training.stage import CommitInfo, StageWorker, build_shard
from app.node.training.trainer import NodeTrainer
from app.node.training.transport import LocalTransport

ARCH = ModelArchitecture.tiny()


def tiny_config(**changes: object) -> TrainingConfig:
    base = {"model": "tiny", "batch_size": 4, "micro_batches": 2, "seq_len": 32, "lr": 3e-3,
            "warmup_steps": 0, "decay_steps": 1000, "inner_steps": 5}
    base.update(changes)
    return TrainingConfig.from_dict(base)


def make_stage(bounds: tuple[int, int], config: TrainingConfig, **kwargs: object) -> StageWorker:
    first, last = bounds[0] == 0, bounds[1] == ARCH.layers
    return StageWorker(build_shard(ARCH, bounds, with_embedding=first, with_head=last, seed=0), config,
                       **kwargs)  # type: ignore[arg-type]


def trainer_hooks(trainer: Callable[[], NodeTrainer | None]) -> dict[str, Any]:
    """A stage's hooks for the NodeTrainer built after it (the trainer is built from the stage), as
    the runtime's StageHost passes them: ``make_stage(..., **trainer_hooks(lambda: trainer))``."""
    def on_commit(stage: StageWorker, info: CommitInfo) -> None:
        if (t := trainer()) is not None:
            t.record_commit(stage, info)

    async def after_commit(stage: StageWorker) -> None:
        if (t := trainer()) is not None:
            await t.after_commit(stage)

    return {"on_commit": on_commit, "after_commit": after_commit}


def build_pipeline(bounds: list[tuple[int, int]], config: TrainingConfig, *, replicas: int = 1,
                   delay_s: float = 0.0, hooks: dict[str, dict[str, Any]] | None = None
                   ) -> tuple[PipelineDriver, LocalTransport, dict[str, StageWorker]]:
    """Driver on stage 0; every other stage held by ``replicas`` peers named s<start>r<i>;
    ``hooks[name]``: that stage's construction hooks (trainer_hooks)."""
    hooks = hooks or {}
    net = LocalTransport(delay_s=delay_s)
    stages: dict[str, StageWorker] = {}
    driver_stage = make_stage(bounds[0], config, **hooks.get("driver", {}))
    stages["driver"] = driver_stage
    for b in bounds[1:]:
        for r in range(replicas):
            name = f"s{b[0]}r{r}"
            stages[name] = make_stage(b, config, **hooks.get(name, {}))
            net.add_peer(name, b, stages[name].handle, weights=_weights(stages[name]))
    driver = PipelineDriver("driver", driver_stage, [b[0] for b in bounds[1:]], net,
                            micro_batches=config.micro_batches)
    return driver, net, stages


def _weights(stage: StageWorker):  # noqa: ANN202
    async def fetch(_range: tuple[int, int]) -> dict[str, torch.Tensor]:
        return stage.state_for_transfer()

    return fetch


def random_batch(config: TrainingConfig, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (config.batch_size, config.seq_len + 1), generator=gen)


def patterned_batch(config: TrainingConfig, seed: int) -> torch.Tensor:
    """Learnable data: repeating byte ramps with a random phase per row."""
    gen = torch.Generator().manual_seed(seed)
    phase = torch.randint(0, 16, (config.batch_size, 1), generator=gen)
    return (torch.arange(config.seq_len + 1).unsqueeze(0) + phase) % 16 + 97
