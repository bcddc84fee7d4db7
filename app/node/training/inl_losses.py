"""Seed 003's training extras for INL blocks: the variance-weighted term and the cycle scheduler.

Both are off by default (``TrainingConfig.variance_loss_weight = 0``, ``cycle_schedule = "off"``).

* **Variance-weighted regularisation** ("penalises unstable neurons more"): each INL block's final
  distance from equilibrium ``e = x − mu`` is penalised per channel, weighted by how much that
  channel varies over the tokens relative to the others (the weights are not differentiated, so
  the term pulls unstable channels back harder instead of shrinking their variance estimate):

      penalty = weight · Σ_c w_c · mean_tokens(e_c²),   w_c = var_c / mean_c(var_c)

* **Equilibrium-exploration cycles** ("alternates stability and discovery phases"): the seed's
  "balanced" preset runs 10 epochs of equilibrium then 20 of exploration, 5 times. The penalty has
  its full weight in equilibrium phases and EXPLORATION_FACTOR of it while exploring.

A stage's loss is computed only at the head, so the penalty of the blocks a stage holds is added
where they are: ``attach_penalty`` makes each INL block's output carry its penalty's gradient
(an identity in the forward; in the backward the penalty's gradient is added), so the gradient of
every stage is that of ``loss + Σ penalties`` while the reported loss stays the plain
cross-entropy, comparable across block types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from app.node.model.inl import INLBlock
from app.node.model.shard import ModelShard

# -- constants (seed 003, in one place) -------------------------------------------------------------
VARIANCE_LOSS_WEIGHT = 0.01
"""A suggested ``variance_loss_weight``: seed 003 names the term but its summary gives no weight;
0.01 keeps it two orders below the cross-entropy of a young model (our choice)."""
EQUILIBRIUM_EPOCHS = 10
EXPLORATION_EPOCHS = 20
CYCLES = 5
"""Seed 003's "balanced" preset: equilibrium 10 epochs, exploration 20, repeated 5 times."""
STEPS_PER_EPOCH = 100
"""The network has no epochs (the corpus streams); one seed "epoch" is this many inner steps."""
EXPLORATION_FACTOR = 0.1
"""Share of the penalty kept while exploring (our choice: the seed only says the pull weakens)."""
CYCLE_PRESETS = ("off", "balanced")


def variance_weighted_penalty(error: torch.Tensor) -> torch.Tensor:
    """The unweighted term above for one block's ``error`` [..., channels]."""
    flat = error.float().reshape(-1, error.shape[-1])
    var = flat.detach().var(dim=0, unbiased=False) if flat.shape[0] > 1 else torch.ones_like(flat[0])
    weights = var / var.mean().clamp_min(1e-12)
    return (weights * flat.pow(2).mean(dim=0)).sum()


@dataclass(frozen=True)
class CycleSchedule:
    """Which phase an inner step is in (seed 003's equilibrium-exploration cycles)."""

    equilibrium_steps: int = EQUILIBRIUM_EPOCHS * STEPS_PER_EPOCH
    exploration_steps: int = EXPLORATION_EPOCHS * STEPS_PER_EPOCH
    cycles: int = CYCLES

    def is_exploration(self, step: int) -> bool:
        """After the last cycle training stays in equilibrium."""
        period = self.equilibrium_steps + self.exploration_steps
        if step >= period * self.cycles:
            return False
        return step % period >= self.equilibrium_steps

    def penalty_factor(self, step: int) -> float:
        return EXPLORATION_FACTOR if self.is_exploration(step) else 1.0


class _CarryPenalty(torch.autograd.Function):
    """Returns ``out`` unchanged; its backward also sends a gradient of 1 to ``penalty``."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:  # noqa: ANN401
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN401
        return grad, torch.ones((), dtype=torch.float32, device=grad.device)


def attach_penalty(shard: ModelShard, weight: float, schedule: CycleSchedule | None,
                   step: Callable[[], int]) -> int:
    """Make every INL block of ``shard`` add ``weight`` (× the schedule's factor at ``step()``) ×
    its variance-weighted penalty to the gradient. Returns the number of blocks it applies to.
    Wraps the block's forward on the instance, like training/speed.py (apply it before those)."""
    blocks = [b for b in shard.blocks.values() if isinstance(b, INLBlock)]
    if weight <= 0:
        return 0
    for block in blocks:
        block.inl.record_error = True
        block.forward = _with_penalty(block, type(block).forward.__get__(block), weight, schedule, step)  # type: ignore[method-assign]
    return len(blocks)


def _with_penalty(block: INLBlock, forward: Callable[..., torch.Tensor], weight: float,
                  schedule: CycleSchedule | None, step: Callable[[], int]) -> Callable[..., torch.Tensor]:
    def run(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: Any = None) -> torch.Tensor:  # noqa: ANN401
        out = forward(x, cos, sin, cache)
        error = block.inl.last_error
        block.inl.last_error = None  # do not keep the graph alive beyond this forward
        if not torch.is_grad_enabled() or error is None:
            return out
        factor = schedule.penalty_factor(step()) if schedule is not None else 1.0
        return _CarryPenalty.apply(out, weight * factor * variance_weighted_penalty(error))

    return run


def schedule_for(preset: str) -> CycleSchedule | None:
    if preset not in CYCLE_PRESETS:
        raise ValueError(f"cycle_schedule must be one of {', '.join(CYCLE_PRESETS)}, got {preset!r}")
    return CycleSchedule() if preset == "balanced" else None
