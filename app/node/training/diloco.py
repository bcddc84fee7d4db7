"""DiLoCo: many local (inner) steps, then an outer step on the averaged pseudo-gradient.

DiLoCo (Douillard et al., 2023, "DiLoCo: Distributed Low-Communication Training of Language
Models"): each replica keeps the weights it started the round from (the *anchor*), runs H inner
AdamW steps on its own data, then replicas exchange the pseudo-gradient ``anchor − current``,
aggregate it (app/node/training/aggregation.py) and apply it to the anchor with an outer SGD
optimiser with Nesterov momentum. The new anchor is copied into the live weights and the next
round starts. Only the outer step talks to the network, once every H steps.

Parameters are tracked by OBJECT: the replica keeps the ``nn.Parameter`` objects it was given,
in order, and writes back into exactly those tensors. The original implementation looked new
parameters up by name after width growth, so regrown layers never reached the optimiser
(DESIGN.md §4); here a grown model needs a new replica, and ``tracks()`` says whether a
module's parameters are still the ones this replica holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from app.node.schema import STRICT, parse
from app.node.training.config import DEFAULT_INNER_STEPS, DEFAULT_OUTER_LR, DEFAULT_OUTER_MOMENTUM


class DiLoCoStateError(ValueError):
    """A DiLoCo state dict or aggregated update does not match the parameters held."""


@dataclass(frozen=True)
class DiLoCoConfig:
    """Outer-loop settings; defaults are the DiLoCo paper's, defined once in training/config.py.

    A devnet or test shrinks ``inner_steps`` through config; the code path is the same.
    """

    __pydantic_config__ = STRICT

    inner_steps: int = DEFAULT_INNER_STEPS
    outer_lr: float = DEFAULT_OUTER_LR
    outer_momentum: float = DEFAULT_OUTER_MOMENTUM
    nesterov: bool = True

    def __post_init__(self) -> None:
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {self.inner_steps}")
        if not self.outer_lr > 0:
            raise ValueError(f"outer_lr must be > 0, got {self.outer_lr}")
        if not 0 <= self.outer_momentum < 1:
            raise ValueError(f"outer_momentum must be in [0, 1), got {self.outer_momentum}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiLoCoConfig:
        """Build from a mapping through the config schema (ValueError naming the bad key)."""
        return parse(cls, d, noun="DiLoCo setting")


ParamSource = nn.Module | Mapping[str, nn.Parameter] | Iterable[tuple[str, nn.Parameter]]


class DiLoCoReplica:
    """The outer-loop state of one replica of a layer range: anchor, momentum, step counters."""

    def __init__(self, params: ParamSource, config: DiLoCoConfig | None = None) -> None:
        self.config = config or DiLoCoConfig()
        pairs = _named_params(params)
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        if len({id(p) for _, p in pairs}) != len(pairs):
            raise ValueError("the same parameter object appears twice (tied weights): pass it once")
        self._names = names
        self._params = [p for _, p in pairs]
        # Anchor and momentum stay on the CPU whatever device trains (as OpenDiLoCo): they cost no
        # accelerator memory, and the pseudo-gradient goes to the network from the CPU anyway.
        self._anchor = [p.detach().to("cpu", torch.float32, copy=True) for p in self._params]
        self._momentum = [torch.zeros_like(a) for a in self._anchor]
        self.inner_steps_done = 0
        self.outer_steps_done = 0

    # -- identity ---------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def anchor(self) -> dict[str, torch.Tensor]:
        """The weights this round started from (float32 copies; do not modify)."""
        return dict(zip(self._names, self._anchor, strict=True))

    def tracks(self, module: nn.Module) -> bool:
        """True if ``module``'s trainable parameters are exactly the objects this replica holds."""
        live = [p for p in module.parameters() if p.requires_grad]
        return len(live) == len(self._params) and {id(p) for p in live} == {id(p) for p in self._params}

    # -- inner loop -------------------------------------------------------------------------------
    def record_inner_step(self, count: int = 1) -> None:
        """Count inner optimiser steps taken on the live parameters since the last sync."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self.inner_steps_done += count

    def should_sync(self) -> bool:
        return self.inner_steps_done >= self.config.inner_steps

    def pseudo_gradient(self) -> dict[str, torch.Tensor]:
        """``anchor − current`` per parameter, in float32 (the DiLoCo outer gradient)."""
        with torch.no_grad():
            return {name: a - p.detach().to("cpu", torch.float32)
                    for name, a, p in zip(self._names, self._anchor, self._params, strict=True)}

    # -- outer loop -------------------------------------------------------------------------------
    def apply_outer(self, aggregated: Mapping[str, torch.Tensor]) -> None:
        """One outer SGD step (Nesterov) on the anchor with ``aggregated`` as gradient; then copy
        the anchor into the live parameters and restart the inner-step count.

        Same update as ``torch.optim.SGD(nesterov=True)``: ``m = μ·m + g``, step ``g + μ·m``
        (or ``m`` without Nesterov), anchor ``-= lr · step``. With lr = 1 and μ = 0 the new
        anchor is exactly ``anchor − g``; with a single replica that is its own current weights.
        """
        self._check_update(aggregated)
        lr, mu = self.config.outer_lr, self.config.outer_momentum
        with torch.no_grad():
            for name, anchor, buf in zip(self._names, self._anchor, self._momentum, strict=True):
                g = aggregated[name].to("cpu", torch.float32)  # the anchor lives on the CPU
                buf.mul_(mu).add_(g)
                step = g.add(buf, alpha=mu) if self.config.nesterov else buf
                anchor.sub_(step, alpha=lr)
        self._copy_anchor_to_params()
        self.inner_steps_done = 0
        self.outer_steps_done += 1

    def reset_anchor(self) -> None:
        """Take the live weights as the new anchor (after loading weights from a replica)."""
        with torch.no_grad():
            for anchor, p in zip(self._anchor, self._params, strict=True):
                anchor.copy_(p.detach().to(torch.float32))
        self.inner_steps_done = 0

    def _copy_anchor_to_params(self) -> None:
        with torch.no_grad():
            for anchor, p in zip(self._anchor, self._params, strict=True):
                p.copy_(anchor.to(p.dtype))

    def _check_update(self, update: Mapping[str, torch.Tensor]) -> None:
        if set(update) != set(self._names):
            missing, extra = sorted(set(self._names) - set(update)), sorted(set(update) - set(self._names))
            raise DiLoCoStateError(f"outer update names differ (missing {missing[:3]}, unexpected {extra[:3]})")
        for name, anchor in zip(self._names, self._anchor, strict=True):
            t = update[name]
            if tuple(t.shape) != tuple(anchor.shape):
                raise DiLoCoStateError(f"{name}: update shape {tuple(t.shape)}, expected {tuple(anchor.shape)}")
            if not bool(torch.isfinite(t).all()):
                raise DiLoCoStateError(f"{name}: outer update contains NaN or Inf")

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Anchor, momentum and counters: everything to resume the outer loop exactly."""
        return {
            "anchor": {n: a.clone() for n, a in zip(self._names, self._anchor, strict=True)},
            "momentum": {n: m.clone() for n, m in zip(self._names, self._momentum, strict=True)},
            "inner_steps_done": self.inner_steps_done,
            "outer_steps_done": self.outer_steps_done,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from ``state_dict()``; DiLoCoStateError naming the first mismatch."""
        for part in ("anchor", "momentum"):
            tensors = state.get(part)
            if not isinstance(tensors, Mapping):
                raise DiLoCoStateError(f"DiLoCo state lacks its {part!r} tensors")
            self._check_update(tensors)
        counters = [state.get("inner_steps_done"), state.get("outer_steps_done")]
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counters):
            raise DiLoCoStateError(f"DiLoCo step counters must be non-negative integers, got {counters}")
        with torch.no_grad():
            for i, name in enumerate(self._names):
                self._anchor[i].copy_(state["anchor"][name].to(torch.float32))
                self._momentum[i].copy_(state["momentum"][name].to(torch.float32))
        self.inner_steps_done, self.outer_steps_done = counters

    def flat_state(self) -> dict[str, torch.Tensor]:
        """The tensors of ``state_dict()`` flattened with ``anchor.`` / ``momentum.`` prefixes,
        for safetensors checkpoints (counters go in the checkpoint's metadata)."""
        out = {f"anchor.{n}": a.clone() for n, a in zip(self._names, self._anchor, strict=True)}
        out.update({f"momentum.{n}": m.clone() for n, m in zip(self._names, self._momentum, strict=True)})
        return out

    def load_flat_state(self, tensors: Mapping[str, torch.Tensor], inner_steps_done: int,
                        outer_steps_done: int) -> None:
        """Inverse of ``flat_state()`` plus the counters from metadata."""
        self.load_state_dict({
            "anchor": {n: tensors[f"anchor.{n}"] for n in self._names if f"anchor.{n}" in tensors},
            "momentum": {n: tensors[f"momentum.{n}"] for n in self._names if f"momentum.{n}" in tensors},
            "inner_steps_done": inner_steps_done,
            "outer_steps_done": outer_steps_done,
        })


def _named_params(params: ParamSource) -> list[tuple[str, nn.Parameter]]:
    if isinstance(params, nn.Module):
        pairs = [(n, p) for n, p in params.named_parameters() if p.requires_grad]
    elif isinstance(params, Mapping):
        pairs = list(params.items())
    else:
        pairs = list(params)
    for name, p in pairs:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{name}: expected a parameter tensor, got {type(p).__name__}")
    if not pairs:
        raise ValueError("a DiLoCo replica needs at least one trainable parameter")
    return pairs
