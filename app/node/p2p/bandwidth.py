"""The volunteer's upload / download caps on tensor streams: one token bucket per direction.

A bucket holds up to ``burst`` bytes of credit and refills at ``rate`` bytes per second. Sending
(or having received) ``n`` bytes takes ``n`` from it; when that leaves it in debt the caller waits
until the debt is repaid. Debt rather than refusal lets a 1 MiB chunk pass a 64 KiB/s cap: the
chunk goes, and the stream pauses ~16 s before the next, so over a long transfer the rate holds.
Concurrent streams share the bucket, so the cap is for the node, not per call.

The rate can change while a stream waits (the volunteer comes back to the computer): a waiter
re-reads the bucket every quarter second, and ``None`` (unlimited) forgives the debt at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
_MAX_NAP_S = 0.25
BURST_SECONDS = 1.0
"""Credit a quiet link may save up, in seconds of its rate: small enough that a burst after a
pause does not flood the volunteer's line, large enough that small messages never wait."""


class TokenBucket:
    def __init__(self, rate: float | None = None, *, burst: float | None = None, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()  # cheap, and makes a bucket safe to share between threads
        self._rate: float | None = None
        self._burst = 0.0
        self._tokens = 0.0
        self._stamp = clock()
        self._fixed_burst = burst
        self.taken_total = 0  # bytes that went through, capped or not (for the UI and tests)
        self.set_rate(rate)

    @property
    def rate(self) -> float | None:
        return self._rate

    def set_rate(self, rate: float | None) -> None:
        """Bytes per second from now on; ``None`` is unlimited (and forgives any debt)."""
        if rate is not None and rate <= 0:
            raise ValueError(f"a rate must be positive or None (unlimited), got {rate}")
        with self._lock:
            self._refill()
            was_unlimited, self._rate = self._rate is None, rate
            if rate is None:
                self._tokens, self._burst = 0.0, 0.0
                return
            self._burst = self._fixed_burst if self._fixed_burst is not None else rate * BURST_SECONDS
            # A new cap starts with a full burst of credit, as a link quiet for a second would have.
            self._tokens = self._burst if was_unlimited else min(self._tokens, self._burst)

    def _refill(self) -> None:
        now = self._clock()
        if self._rate is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def reserve(self, nbytes: int) -> float:
        """Take ``nbytes`` now; returns the seconds to wait before moving more at this rate."""
        if nbytes < 0:
            raise ValueError("cannot take a negative number of bytes")
        with self._lock:
            self._refill()
            self.taken_total += nbytes
            if self._rate is None:
                return 0.0
            self._tokens -= nbytes
            return max(0.0, -self._tokens / self._rate)

    def debt_s(self) -> float:
        """Seconds until the bucket is out of debt at the current rate (0 when unlimited)."""
        with self._lock:
            self._refill()
            if self._rate is None:
                return 0.0
            return max(0.0, -self._tokens / self._rate)

    async def take(self, nbytes: int) -> None:
        """Take ``nbytes`` and wait until the bucket is out of debt (re-checking the rate). Without
        debt it returns at once, without yielding to the event loop."""
        wait = self.reserve(nbytes)
        while wait > 0:
            await self._sleep(min(wait, _MAX_NAP_S))
            wait = self.debt_s()


class Bandwidth:
    """A node's two buckets: ``upload`` (what it sends) and ``download`` (what it reads)."""

    def __init__(self, upload_bytes_per_s: float | None = None, download_bytes_per_s: float | None = None, *,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self.upload = TokenBucket(upload_bytes_per_s, clock=clock, sleep=sleep)
        self.download = TokenBucket(download_bytes_per_s, clock=clock, sleep=sleep)

    def set_rates(self, upload_bytes_per_s: float | None, download_bytes_per_s: float | None) -> None:
        self.upload.set_rate(upload_bytes_per_s)
        self.download.set_rate(download_bytes_per_s)

    @property
    def limited(self) -> bool:
        return self.upload.rate is not None or self.download.rate is not None
