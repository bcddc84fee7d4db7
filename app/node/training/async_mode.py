"""Async mode: T5 and unmatched nodes train a snapshot of the whole model on their own data.

A node too slow for any quorum's pipeline (speed tier T5, DESIGN.md §4) or one that found no
quorum still helps (seed 001, "ASYNC (T5): train offline, submit grads"): it takes a snapshot of
the current weights (``ModelShard.full``) when the model fits in its memory, runs ``steps`` local
AdamW steps on its own data share, and submits the pseudo-gradient ``snapshot − trained`` as a
``Contribution``. At the next outer sync the holders of each layer range fold in the part that
covers their layers (``Contribution.subset``), weighted by ``sqrt(batches) × freshness``: the
age is measured from when the snapshot was taken, so work against old weights counts less.

The trainer is synchronous and compute-heavy: the runtime calls ``train_round`` in an executor so
the node keeps answering peers. The inner AdamW state persists across rounds, as DiLoCo does. It
trains on ``device`` (the node's GPU or the CPU): the model is built on the CPU and moved, batches
are moved on entry, and the contribution's tensors are CPU tensors (they go to the network).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from app.node.data.loader import BatchLoader
from app.node.model.architecture import BYTES_PER_TRAINED_PARAM, ModelArchitecture
from app.node.model.shard import ModelShard, lm_loss
from app.node.training.aggregation import Contribution

DEFAULT_ASYNC_STEPS = 100
"""Local steps per submission: H = 100 as INTELLECT-1's DiLoCo syncs, short enough that a T5
node (> 1 s per reference layer) still submits within the 1 h freshness tier."""

DEFAULT_LR = 1e-4
DEFAULT_WEIGHT_DECAY = 0.1
"""Inner AdamW lr 1e-4 and weight decay 0.1: the original implementation's inner optimiser
(DESIGN.md §4); tests and devnets raise the lr to see progress in a few steps."""

GRAD_CLIP = 1.0
"""Global gradient-norm clip, the usual LLM setting; keeps one bad batch from a huge update."""


class AsyncModeError(RuntimeError):
    """The snapshot does not fit this node, or does not match the architecture."""


@dataclass(frozen=True)
class AsyncConfig:
    steps: int = DEFAULT_ASYNC_STEPS
    lr: float = DEFAULT_LR
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    grad_clip: float = GRAD_CLIP

    def __post_init__(self) -> None:
        if self.steps < 1 or not self.lr > 0 or self.weight_decay < 0 or not self.grad_clip > 0:
            raise ValueError(f"invalid async config {self}: steps >= 1, lr > 0, weight_decay >= 0, grad_clip > 0")


@dataclass
class AsyncResult:
    """One round's outcome: the contribution to submit and what the round did."""

    contribution: Contribution
    snapshot_time: float
    losses: list[float] = field(default_factory=list)
    tokens: int = 0

    def contribution_at(self, now: float) -> Contribution:
        """The contribution with its age measured at ``now`` (when the sync folds it in)."""
        c = self.contribution
        return Contribution(c.node_id, c.tensors, c.batches, max(0.0, now - self.snapshot_time))


def snapshot_fits(arch: ModelArchitecture, memory_budget_bytes: int) -> bool:
    """True if this node can train the whole model (every parameter at BYTES_PER_TRAINED_PARAM)."""
    return arch.param_count() * BYTES_PER_TRAINED_PARAM <= memory_budget_bytes


class AsyncTrainer:
    """Trains snapshots of the whole model on one data share and turns them into contributions."""

    def __init__(self, arch: ModelArchitecture, loader: BatchLoader, *, node_id: str,
                 config: AsyncConfig | None = None, memory_budget_bytes: int | None = None,
                 clock: Callable[[], float] = time.time, device: torch.device | str = "cpu") -> None:
        if memory_budget_bytes is not None and not snapshot_fits(arch, memory_budget_bytes):
            need = arch.param_count() * BYTES_PER_TRAINED_PARAM
            raise AsyncModeError(f"the whole model needs {need / 2**20:.0f} MiB to train but this node offers "
                                 f"{memory_budget_bytes / 2**20:.0f} MiB; it cannot run async mode")
        self.arch, self.loader, self.node_id = arch, loader, node_id
        self.config = config or AsyncConfig()
        self.clock = clock
        self.device = torch.device(device)
        self.model = ModelShard.full(arch).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr,
                                           weight_decay=self.config.weight_decay)
        self.rounds_done = 0

    def train_round(self, snapshot: Mapping[str, torch.Tensor], snapshot_time: float, *,
                    steps: int | None = None, should_stop: Callable[[], bool] | None = None) -> AsyncResult:
        """Load ``snapshot``, train up to ``steps`` batches, return the pseudo-gradient.

        ``should_stop`` is polled between steps (a shutdown): the round then ends early and the
        contribution counts only the batches actually trained.
        """
        self._load(snapshot)
        start = {name: p.detach().clone() for name, p in self.model.named_parameters()}
        self.model.train()
        losses: list[float] = []
        for _ in range(steps if steps is not None else self.config.steps):
            if should_stop is not None and should_stop():
                break
            losses.append(self._step())
        with torch.no_grad():
            pseudo = {name: (start[name] - p.detach()).to("cpu")
                      for name, p in self.model.named_parameters()}
        self.rounds_done += 1
        contribution = Contribution(self.node_id, pseudo, len(losses), max(0.0, self.clock() - snapshot_time))
        return AsyncResult(contribution, snapshot_time, losses, len(losses) * self.loader.tokens_per_batch)

    def _load(self, snapshot: Mapping[str, torch.Tensor]) -> None:
        try:
            self.model.load_state_dict(dict(snapshot), strict=True)
        except RuntimeError as exc:
            raise AsyncModeError(f"the snapshot does not match architecture v{self.arch.version}: {exc}") from exc

    def _step(self) -> float:
        inputs, targets = self.loader.next_batch()
        loss = lm_loss(self.model(inputs.to(self.device)), targets.to(self.device))
        if not math.isfinite(loss.item()):
            raise AsyncModeError("the loss became NaN or Inf; lower the async learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return float(loss.item())


def fold_async(contributions: list[Contribution], async_results: list[AsyncResult], names: list[str],
               now: float) -> list[Contribution]:
    """The cohort's contributions plus each async result's part for the parameters ``names``,
    aged at ``now``; async results trained zero batches are left out (nothing to weigh)."""
    folded = list(contributions)
    for result in async_results:
        if result.contribution.batches > 0:
            folded.append(result.contribution_at(now).subset(names))
    return folded
