"""Enforce the volunteer's CPU/GPU caps: a duty-cycle throttle and the executor that feeds it.

``cpu_share`` / ``gpu_share`` work the way BOINC's "use at most X % of CPU time" does: after a
unit of compute that kept the device busy for ``t`` seconds the node stays idle for
``t * (1 - share) / share`` before starting the next, so over any long run the busy fraction of
wall-clock time is at most ``share``. Idle time that passes anyway (waiting for a peer, for data)
counts towards what is owed.

Compute is measured where it runs: every heavy job goes through the engine's executor
(StageWorker, DiLoCo, async training, checkpoints), so :class:`MeteredExecutor` times each job and
holds the next one back while idle time is owed. That covers a stage serving other drivers just as
well as a driver; the driver also waits in ``RunControl.proceed`` (between micro-batches, without
tying up a worker thread) on the same :class:`DutyCycle`. Overlapping jobs count once: busy time is
the wall-clock union of the jobs, which is what the share limits.

``cpu_threads`` is torch's intra-op thread count. With the OpenMP backend that count is per
thread (a worker thread keeps the count it first computed with), so the executor applies the
current count in each worker before its next job, not only on the thread that changed it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Clock = Callable[[], float]
_MAX_NAP_S = 0.25
"""A waiter re-reads the debt this often, so a share raised by the volunteer (or a stop) takes
effect within a quarter second instead of after the whole owed idle time."""


def default_threads(cpu_count: int | None = None) -> int:
    """All cores but one (the volunteer's desktop keeps a core), and at least one."""
    return max(1, (cpu_count if cpu_count is not None else os.cpu_count() or 1) - 1)


class DutyCycle:
    """Tracks busy periods and the idle time they are owed; thread-safe, clock injectable."""

    def __init__(self, share: float = 1.0, clock: Clock = time.monotonic) -> None:
        _check_share(share)
        self._clock = clock
        self._lock = threading.Lock()
        self._share = share
        self._active = 0
        self._busy_since = 0.0
        self._resume_at = float("-inf")  # no new unit should start before this
        self._released = False
        self.busy_total = 0.0

    @property
    def share(self) -> float:
        return self._share

    def set_share(self, share: float) -> None:
        """Change the share now; idle time already owed is rescaled to the new share."""
        _check_share(share)
        with self._lock:
            now = self._clock()
            remaining = self._resume_at - now
            old, new = _idle_factor(self._share), _idle_factor(share)
            if remaining > 0:
                self._resume_at = now + (remaining * new / old if old > 0 else 0.0)
            self._share = share

    def release(self) -> None:
        """Stop throttling for good (the node is stopping: the final checkpoint must not wait)."""
        with self._lock:
            self._released = True
            self._resume_at = float("-inf")

    def begin(self) -> None:
        """A unit of compute starts (call :meth:`wait_s` / a waiter first to honour the share)."""
        with self._lock:
            if self._active == 0:
                self._busy_since = self._clock()
            self._active += 1

    def end(self) -> None:
        """The unit started by the matching :meth:`begin` finished."""
        with self._lock:
            if self._active <= 0:
                raise RuntimeError("DutyCycle.end() without begin()")
            self._active -= 1
            if self._active == 0:
                now = self._clock()
                self._owe(now, now - self._busy_since)

    def charge(self, seconds: float) -> None:
        """Report a unit of ``seconds`` that just finished and was timed by the caller."""
        if seconds < 0:
            raise ValueError("busy seconds cannot be negative")
        with self._lock:
            self._owe(self._clock(), seconds)

    def _owe(self, now: float, busy: float) -> None:
        self.busy_total += busy
        if self._released:
            return
        # Debt not yet paid (a unit that had to start early) adds up rather than being forgotten.
        self._resume_at = max(self._resume_at, now) + busy * _idle_factor(self._share)

    def wait_s(self) -> float:
        """Seconds to stay idle before the next unit; 0 while another unit is running (joining a
        busy period adds no idle time: the device is busy either way)."""
        with self._lock:
            if self._active or self._released:
                return 0.0
            return max(0.0, self._resume_at - self._clock())

    def block(self, stop: threading.Event | None = None) -> None:
        """Wait out the owed idle time on this (worker) thread; returns early once ``stop`` is set."""
        while (wait := self.wait_s()) > 0:
            if stop is not None:
                if stop.wait(min(wait, _MAX_NAP_S)):
                    return
            else:
                time.sleep(min(wait, _MAX_NAP_S))

    async def idle(self, stopped: Callable[[], bool] = lambda: False) -> None:
        """The same on the event loop: yields to other tasks while waiting."""
        while (wait := self.wait_s()) > 0 and not stopped():
            await asyncio.sleep(min(wait, _MAX_NAP_S))


def _check_share(share: float) -> None:
    if not 0.0 < share <= 1.0:
        raise ValueError(f"a share must be in (0, 1], got {share}")


def _idle_factor(share: float) -> float:
    """Idle seconds owed per busy second: busy / (busy + idle) == share."""
    return (1.0 - share) / share


class MeteredExecutor(concurrent.futures.ThreadPoolExecutor):
    """The engine's executor: each job first waits out the duty cycle's owed idle time and brings
    its worker's torch settings (threads, CUDA device) up to date, then runs as metered compute."""

    def __init__(self, max_workers: int, duty: DutyCycle, *, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.duty = duty
        self._torch_threads: int | None = None  # None: leave torch's count alone
        self._cuda_device: int | None = None
        self._generation = 0
        self._local = threading.local()
        self._stop = threading.Event()
        self.original_threads: int | None = None

    def set_threads(self, threads: int | None) -> None:
        """torch intra-op threads for the jobs from now on (applied per worker, before its next job)."""
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        self._torch_threads = threads
        self._generation += 1

    def set_cuda_device(self, index: int | None) -> None:
        """The CUDA device jobs run on; like the thread count, torch keeps it per thread."""
        self._cuda_device = index
        self._generation += 1

    def restore_threads(self) -> None:
        """Put torch's process-wide thread count back as it was before the first job changed it
        (an engine stopped inside a longer-lived process, such as a test run, leaves no trace)."""
        if self.original_threads is not None:
            import torch

            torch.set_num_threads(self.original_threads)

    def release(self) -> None:
        """Run queued jobs at once from now on (shutdown)."""
        self._stop.set()
        self.duty.release()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        return super().submit(self._run, fn, args, kwargs)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        self.duty.block(self._stop)
        self._apply_settings()
        self.duty.begin()
        try:
            return fn(*args, **kwargs)
        finally:
            self.duty.end()

    def _apply_settings(self) -> None:
        generation = self._generation
        if getattr(self._local, "generation", 0) == generation:
            return
        import torch  # on a worker thread of the engine, where torch belongs (never the GUI's)

        if self._torch_threads is not None:
            if self.original_threads is None:
                self.original_threads = torch.get_num_threads()
            torch.set_num_threads(self._torch_threads)
        if self._cuda_device is not None:
            torch.cuda.set_device(self._cuda_device)
        self._local.generation = generation
