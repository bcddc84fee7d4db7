"""How much one replica's pseudo-gradient counts in a cross-quorum outer sync.

Seed 001 ("Gradient Weighting") and DESIGN.md §4 fix the rule::

    weight = sqrt(batches) × freshness

``sqrt`` gives fast quorums more say for more work but with diminishing returns, so a slow or
async node that trained fewer batches still moves the model. Freshness discounts work done
against an old snapshot of the weights (its pseudo-gradient points from a stale start).
"""

from __future__ import annotations

import math

FRESHNESS_TIERS: tuple[tuple[float, float], ...] = (
    (3600.0, 1.0),  # < 1 hour
    (86400.0, 0.9),  # < 1 day
    (7 * 86400.0, 0.7),  # < 1 week
)
"""(age limit in seconds, freshness) pairs in increasing age, from seed 001 / DESIGN.md §4."""

STALE_FRESHNESS = 0.3
"""Freshness of work older than a week (seed 001): kept, but at under a third of its weight."""


def freshness(age_s: float) -> float:
    """Freshness factor in (0, 1] of a contribution computed ``age_s`` seconds ago.

    A negative age (a peer's clock slightly ahead of ours) counts as brand new: it can at most
    earn the top factor 1.0, so clock skew gains nothing. NaN is refused with ValueError.
    """
    if math.isnan(age_s):
        raise ValueError("contribution age must be a number of seconds, got NaN")
    for limit, factor in FRESHNESS_TIERS:
        if age_s < limit:
            return factor
    return STALE_FRESHNESS


def contribution_weight(batches: int, age_s: float) -> float:
    """``sqrt(batches) × freshness(age_s)``; 0.0 for no batches, ValueError for negative ones."""
    if isinstance(batches, bool) or not isinstance(batches, int):
        raise ValueError(f"batches must be an integer count, got {type(batches).__name__}")
    if batches < 0:
        raise ValueError(f"batches must be >= 0, got {batches}")
    return math.sqrt(batches) * freshness(age_s)
