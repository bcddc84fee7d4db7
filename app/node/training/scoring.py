"""Held-out scoring of DiLoCo contributions before they are merged.

Robust averaging alone cannot protect a stage held by two replicas: a coordinate-wise trimmed
mean of two values trims nothing, and a norm filter needs a majority to say what is normal. So
each contribution is judged on its own against data nobody trains on: applied alone to the
round's anchor (``anchor - pseudo_gradient``, i.e. the weights that replica ended its inner
steps with), it must not raise the loss on held-out genesis tokens by more than ``margin`` of
the anchor's own loss. A poisoned update (noise, a sign flip, a scaled or stale model) raises
that loss by far more than honest replicas differ; an honest replica after a round of inner
steps lowers it or leaves it within noise. What survives is then averaged as before (trimmed
mean with 3 or more), and the rejections are returned with their reasons for PoNW to record.

The loss function is the caller's (``HeldOutLoss``): for a stage that holds the whole model it
is ``whole_model_loss`` below on batches the node set aside; a stage that holds only some layers
cannot compute a language-model loss alone, and gets no screening (``StageSync`` says so).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from app.node.training.aggregation import Contribution

HeldOutLoss = Callable[[dict[str, torch.Tensor]], float]
"""Loss on held-out tokens of the stage with these parameters (by name; others unchanged)."""

DEFAULT_MARGIN = 0.02
"""Relative rise of held-out loss a contribution may cause: 2 %. Measured on the two-replica
test (tests/training/test_poisoned_replica.py, tiny model, 4 inner steps per round): honest
replicas changed the held-out loss by -33 % .. -3 % in every round; a replica whose weights
were noise raised it by about +260 %."""


@dataclass(frozen=True)
class Screening:
    """Who passed the held-out test, who did not and why, and the losses measured."""

    accepted: list[Contribution]
    rejected: list[tuple[str, str]]
    baseline: float
    losses: dict[str, float] = field(default_factory=dict)


def screen(contributions: Sequence[Contribution], anchor: dict[str, torch.Tensor], held_out_loss: HeldOutLoss,
           margin: float = DEFAULT_MARGIN) -> Screening:
    """Scores each contribution alone on the held-out loss (see the module docstring).

    ``anchor`` holds the round's starting weights by name; a contribution's tensors are
    pseudo-gradients with the same names (already checked for layout by the caller's decode).
    """
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite non-negative number, got {margin}")
    baseline = float(held_out_loss(anchor))
    if not math.isfinite(baseline):  # nothing to compare against: screening cannot judge
        return Screening(list(contributions), [], baseline)
    limit = baseline + margin * abs(baseline)
    accepted: list[Contribution] = []
    rejected: list[tuple[str, str]] = []
    losses: dict[str, float] = {}
    for c in contributions:
        if set(c.tensors) - set(anchor):
            rejected.append((c.node_id, "pseudo-gradient names parameters this stage does not hold"))
            continue
        candidate = {name: value - c.tensors[name].to(value.dtype) if name in c.tensors else value
                     for name, value in anchor.items()}
        loss = float(held_out_loss(candidate))
        losses[c.node_id] = loss
        if not math.isfinite(loss) or loss > limit:
            rejected.append((c.node_id, f"raises held-out loss from {baseline:.4f} to {loss:.4f} "
                                        f"(more than {margin:.0%})"))
        else:
            accepted.append(c)
    return Screening(accepted, rejected, baseline, losses)


def whole_model_loss(model: torch.nn.Module | Callable[[], torch.nn.Module],
                     batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                     loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> HeldOutLoss:
    """A ``HeldOutLoss`` for a module that maps token ids to logits (a stage holding every layer):
    the mean of ``loss_fn(logits, targets)`` over ``batches``, computed with the given parameters
    swapped in functionally (the live weights are never touched). ``model`` may be a function
    returning the current module, for a stage whose shard is rebuilt (vocabulary growth)."""
    frozen = [(inputs.detach().clone(), targets.detach().clone()) for inputs, targets in batches]
    if not frozen:
        raise ValueError("held-out scoring needs at least one batch")

    def loss(params: dict[str, torch.Tensor]) -> float:
        module = model if isinstance(model, torch.nn.Module) else model()
        live = dict(module.named_parameters())
        swapped = {name: value.to(live[name].device, live[name].dtype) for name, value in params.items()
                   if name in live}
        device = next(iter(live.values())).device
        with torch.no_grad():
            total = 0.0
            for inputs, targets in frozen:
                logits = torch.func.functional_call(module, swapped, (inputs.to(device),), strict=False)
                targets = targets.to(device)
                total += float(loss_fn(logits, targets))
            return total / len(frozen)

    return loss
