"""Earnings per day, extrapolated from the rewards seen since this session started working.

A volunteer wants a number early, but the first minutes are noisy (the first proofs arrive only
after a 60 s verification epoch, DESIGN.md §4), so no estimate is shown before
``MIN_OBSERVED_S`` of work; after that the rate is total reward / time observed.
"""

from __future__ import annotations

MIN_OBSERVED_S = 180.0  # three 60 s epochs: at least a couple of proofs have been validated
SECONDS_PER_DAY = 86_400.0


class EarningsEstimator:
    def __init__(self, min_observed_s: float = MIN_OBSERVED_S) -> None:
        self.min_observed_s = min_observed_s
        self.started_at: float | None = None
        self.units = 0

    def start(self, now: float) -> None:
        """The node started working (first training step); idempotent."""
        if self.started_at is None:
            self.started_at = now

    def add(self, units: int, now: float) -> None:
        self.start(now)
        self.units += units

    def seconds_until_ready(self, now: float) -> float:
        if self.started_at is None:
            return self.min_observed_s
        return max(0.0, self.min_observed_s - (now - self.started_at))

    def per_day_units(self, now: float) -> int | None:
        """Estimated micro-NEURO per day, or None while there is too little to go on."""
        if self.started_at is None or now - self.started_at < self.min_observed_s:
            return None
        return int(self.units / (now - self.started_at) * SECONDS_PER_DAY)
