"""Robust aggregation of pseudo-gradients from the holders of one layer range.

Every replica sends ``anchor − current`` for the same parameters. Before averaging, each
contribution is validated; the survivors are combined coordinate by coordinate.

**Validation** (reasons are returned, never raised, so PoNW can report them later):

- a duplicate node id, a negative or zero batch count, a NaN age;
- a key set, shape or dtype that differs from the expected layout (given by the caller, or else
  the layout most contributions share, so one malformed sender cannot redefine it);
- NaN or Inf anywhere;
- an L2 norm more than ``norm_outlier_factor`` times the cohort's median norm. The median of
  the norms is not moved by a minority, so a sender that scales its update up is caught while
  honest replicas, whose norms are within a small factor of each other, are not. Needs at
  least three contributions to mean anything: with two, nobody can tell which one is wrong.

**Weighted coordinate-wise trimmed mean** (the default): for each coordinate the n accepted
values are sorted, the ``k`` smallest and ``k`` largest are dropped, and the rest are averaged
with the contributions' weights (``sqrt(batches) × freshness``, app/node/training/weighting.py)::

    k = min(ceil(trim_fraction × n), (n − 1) // 2)

Trimming counts contributions, not weight: weights are self-reported (batches), so trimming
by weight mass would let a liar with a huge batch count keep its extreme value. With count
trimming, if at most ``k`` contributions are bad, every surviving value of a coordinate lies
between the smallest and the largest honest value, and a weighted mean of such values does
too, whatever the weights. ``ceil`` makes any positive ``trim_fraction`` trim one value from
each side once n ≥ 3 (the original implementation's 10 % with ``floor`` trimmed nothing below
ten replicas). "mean" is the plain weighted mean, "median" the unweighted coordinate median.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from app.node.training.weighting import contribution_weight

METHODS = ("trimmed_mean", "mean", "median")

DEFAULT_TRIM_FRACTION = 0.1
"""Share trimmed from each side; the original NeuroShard implementation's default (DESIGN.md §4)."""

DEFAULT_NORM_OUTLIER_FACTOR = 10.0
"""A contribution whose norm exceeds 10× the cohort median is refused. Honest DiLoCo replicas
trained on different shards differ in norm by well under 2× (measured in tests/training), while
a ×100 scaling attack is far above; 10 leaves room for honest replicas that did more steps."""


CHUNK = 1 << 20
"""Coordinates combined at a time: the work is coordinate-wise, so chunking changes nothing but
memory (n contributions × 1M float64 = 8n MB, instead of 8n bytes per parameter of a tensor)."""


class AggregationError(ValueError):
    """Nothing could be aggregated (no contributions, or all were rejected)."""


@dataclass
class Contribution:
    """One replica's pseudo-gradient for a layer range, with the work behind it."""

    node_id: str
    tensors: dict[str, torch.Tensor]
    batches: int
    age_s: float = 0.0

    def subset(self, names: Iterable[str]) -> Contribution:
        """The same contribution restricted to ``names`` (e.g. one layer range of a full model)."""
        wanted = set(names)
        return Contribution(self.node_id, {k: v for k, v in self.tensors.items() if k in wanted},
                            self.batches, self.age_s)


@dataclass
class AggregateResult:
    """The aggregated tensors, who was counted (with weights) and who was refused and why."""

    tensors: dict[str, torch.Tensor]
    accepted: list[str]
    rejected: list[tuple[str, str]]
    weights: dict[str, float] = field(default_factory=dict)


Layout = dict[str, tuple[tuple[int, ...], torch.dtype]]


def layout_of(tensors: dict[str, torch.Tensor]) -> Layout:
    """Names, shapes and dtypes of a tensor dict: what every contribution must match."""
    return {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}


def aggregate(contributions: Sequence[Contribution], *, method: str = "trimmed_mean",
              trim_fraction: float = DEFAULT_TRIM_FRACTION,
              norm_outlier_factor: float = DEFAULT_NORM_OUTLIER_FACTOR,
              expected: Layout | None = None) -> AggregateResult:
    """Validate ``contributions`` and combine the accepted ones (see the module docstring).

    Raises AggregationError when no contribution survives validation, ValueError for a bad
    ``method`` or ``trim_fraction``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown aggregation method {method!r}; choose one of {', '.join(METHODS)}")
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    accepted, rejected, weights = _validate(contributions, expected, norm_outlier_factor)
    if not accepted:
        detail = "; ".join(f"{node}: {why}" for node, why in rejected) or "none were given"
        raise AggregationError(f"no valid contributions to aggregate ({detail})")
    w = torch.tensor([weights[c.node_id] for c in accepted], dtype=torch.float64)
    out: dict[str, torch.Tensor] = {}
    for name, ref in accepted[0].tensors.items():
        flat = [c.tensors[name].detach().reshape(-1) for c in accepted]
        parts = [_combine(torch.stack([f[i:i + CHUNK] for f in flat]).to(torch.float64), w, method, trim_fraction)
                 for i in range(0, ref.numel(), CHUNK)]
        out[name] = (torch.cat(parts) if parts else torch.empty(0)).reshape(ref.shape).to(ref.dtype)
    return AggregateResult(out, [c.node_id for c in accepted], rejected,
                           {c.node_id: weights[c.node_id] for c in accepted})


def trim_count(n: int, trim_fraction: float) -> int:
    """How many values are dropped from EACH side of a coordinate among ``n`` contributions."""
    if n <= 0:
        return 0
    return min(math.ceil(trim_fraction * n), (n - 1) // 2)


def _combine(stacked: torch.Tensor, w: torch.Tensor, method: str, trim_fraction: float) -> torch.Tensor:
    """Combine [n, ...] values with weights [n]; the result depends only on the SET of
    (value, weight) pairs, not their order: contributions are pre-ordered by weight and each
    coordinate is sorted stably by value, so ties are broken the same way on every node and
    sums run in the same order (holders of a layer range end with bit-identical weights)."""
    n = stacked.shape[0]
    by_weight = torch.sort(w, stable=True).indices
    stacked, w = stacked[by_weight], w[by_weight]
    values, order = stacked.sort(dim=0, stable=True)
    if method == "median":
        return (values[(n - 1) // 2] + values[n // 2]) / 2
    k = trim_count(n, trim_fraction) if method == "trimmed_mean" else 0
    kept_w = w[order]  # weights follow their values through the per-coordinate sort
    kept_w[:k] = 0.0
    kept_w[n - k:] = 0.0
    return (values * kept_w).sum(0) / kept_w.sum(0)


def _validate(contributions: Sequence[Contribution], expected: Layout | None,
              norm_outlier_factor: float) -> tuple[list[Contribution], list[tuple[str, str]], dict[str, float]]:
    rejected: list[tuple[str, str]] = []
    candidates: list[Contribution] = []
    weights: dict[str, float] = {}
    reference = expected if expected is not None else _majority_layout(contributions)
    for c in contributions:
        reason = _first_problem(c, reference, weights)
        if reason is None:
            weights[c.node_id] = contribution_weight(c.batches, c.age_s)
            candidates.append(c)
        else:
            rejected.append((str(c.node_id), reason))
    norms = {c.node_id: _norm(c.tensors) for c in candidates}
    if len(candidates) >= 3 and math.isfinite(norm_outlier_factor):
        median = float(torch.tensor(list(norms.values()), dtype=torch.float64).median())
        limit = norm_outlier_factor * median
        for c in list(candidates):
            if norms[c.node_id] > limit:
                candidates.remove(c)
                del weights[c.node_id]
                rejected.append((c.node_id, f"norm {norms[c.node_id]:.4g} exceeds {norm_outlier_factor:g}× "
                                            f"the cohort median {median:.4g}"))
    return candidates, rejected, weights


def _first_problem(c: Contribution, reference: Layout, seen: dict[str, float]) -> str | None:
    if not isinstance(c.node_id, str) or not c.node_id:
        return "node id must be a non-empty string"
    if c.node_id in seen:
        return "duplicate contribution from the same node"
    if isinstance(c.batches, bool) or not isinstance(c.batches, int) or c.batches <= 0:
        return f"batch count must be a positive integer, got {c.batches!r}"
    if not isinstance(c.age_s, (int, float)) or math.isnan(c.age_s):
        return f"age must be a number of seconds, got {c.age_s!r}"
    if not isinstance(c.tensors, dict) or not all(isinstance(t, torch.Tensor) for t in c.tensors.values()):
        return "tensors must be a mapping of names to tensors"
    if set(c.tensors) != set(reference):
        missing, extra = sorted(set(reference) - set(c.tensors)), sorted(set(c.tensors) - set(reference))
        return f"wrong tensor names (missing {missing[:3]}, unexpected {extra[:3]})"
    for name, (shape, dtype) in reference.items():
        t = c.tensors[name]
        if tuple(t.shape) != shape:
            return f"{name}: shape {tuple(t.shape)} differs from expected {shape}"
        if t.dtype != dtype or not t.is_floating_point():
            return f"{name}: dtype {t.dtype} differs from expected {dtype}"
        if not bool(torch.isfinite(t).all()):
            return f"{name}: contains NaN or Inf"
    return None


def _majority_layout(contributions: Sequence[Contribution]) -> Layout:
    """The layout most contributions share (first seen wins a tie)."""
    layouts: list[Layout] = []
    for c in contributions:
        try:
            layouts.append(layout_of(c.tensors))
        except (AttributeError, TypeError):
            continue
    if not layouts:
        return {}
    keys = [tuple(sorted((k, v[0], str(v[1])) for k, v in lay.items())) for lay in layouts]
    best = Counter(keys).most_common(1)[0][0]
    return layouts[keys.index(best)]


def _norm(tensors: dict[str, torch.Tensor]) -> float:
    total = sum(float(t.detach().double().pow(2).sum()) for t in tensors.values())
    return math.sqrt(total)
