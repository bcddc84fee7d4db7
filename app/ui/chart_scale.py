"""Axis ranges and tick steps a reader can take in at a glance (pure, no Qt).

Ticks fall on 1, 2 or 5 times a power of ten, so labels never repeat ("1 1 2 2 3" came from
fractional ticks printed as integers); a step axis never ticks below 1. A value that only
wobbles is not magnified into a dramatic curve: the range spans at least a fixed share of the
values' size, so 5.60 to 5.69 reads as the flat line it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TARGET_TICKS = 5
MIN_RELATIVE_SPAN = 0.1  # the y range covers at least 10 % of the largest magnitude shown


@dataclass(frozen=True)
class Scale:
    low: float
    high: float
    step: float
    decimals: int  # digits after the point that the labels need for this step

    @property
    def ticks(self) -> int:
        return int(round((self.high - self.low) / self.step)) + 1


def nice_step(span: float, integer: bool = False) -> float:
    """1, 2 or 5 × 10^k, about span / TARGET_TICKS; at least 1 when ``integer``."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / TARGET_TICKS
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return max(step, 1.0) if integer else step


def scale(values_low: float, values_high: float, integer: bool = False,
          min_relative_span: float = MIN_RELATIVE_SPAN) -> Scale:
    """A range covering [values_low, values_high] on tick boundaries."""
    low, high = min(values_low, values_high), max(values_low, values_high)
    span = high - low
    floor_span = max(abs(low), abs(high)) * min_relative_span
    if span < floor_span:
        middle = (low + high) / 2
        low, high = middle - floor_span / 2, middle + floor_span / 2
    if high - low <= 0:
        low, high = low - 0.5, high + 0.5
    step = nice_step(high - low, integer)
    start = math.floor(low / step) * step
    end = math.ceil(high / step) * step
    if values_low >= 0 > start:  # never below zero for values that cannot be negative
        start, end = 0.0, max(end, step)
    decimals = 0 if step >= 1 else -math.floor(math.log10(step) + 1e-9)
    return Scale(round(start, decimals + 3), round(end, decimals + 3), step, decimals)
