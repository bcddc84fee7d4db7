"""TakeoverService: a driver's progress in the DHT, and the streams of dead drivers it takes over.

The trainer publishes its own progress (training/takeover.py) when a DiLoCo round closed, when its
own steps are done (``settling``) and when it leaves (``done``). Between steps, and while it
settles, it asks ``poll``: every driver once announced on stage 0 that is no longer announced (it
stopped heart-beating) before saying ``done`` is dead; the live, not-yet-leaving driver that
``choose_taker`` names for it opens the dead driver's data stream at its published position and
trains the rest of its plan. A settling driver leaves only when no other driver is still training
(each either finished, died and was taken over, or has no plan to take over), or after
``takeover_wait_s`` with a warning.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable

import torch

from app.node.runtime.network import NetworkService
from app.node.training.config import TrainingConfig
from app.node.training.takeover import DataStream, DriverProgress, ProgressError, choose_taker

log = logging.getLogger("neuroshard.runtime.takeover")

OpenStream = Callable[[dict], Callable[[], torch.Tensor]]
"""Opens a data stream at a published loader position; raises ValueError when it cannot."""


def progress_key(driver: str) -> bytes:
    return hashlib.sha256(f"driver-progress/{driver}".encode()).digest()


class TakeoverService:
    def __init__(self, net: NetworkService, config: TrainingConfig, open_stream: OpenStream,
                 activity: Callable[[str], None], poll_interval_s: float | None = None) -> None:
        self.net, self.config, self.open_stream, self.activity = net, config, open_stream, activity
        self.me = net.node_id
        self.poll_interval_s = poll_interval_s if poll_interval_s is not None else min(2.0, config.heal_interval_s)
        self._known: set[str] = set()  # drivers seen announced on stage 0
        self._handled: set[str] = set()  # dead drivers decided on (taken over by someone, or not)
        self._last_poll = float("-inf")
        self._ttl = max(600.0, config.quorum_session_s * 2)

    async def publish(self, progress: DriverProgress) -> None:
        try:
            await self.net.node.dht.store(progress_key(self.me), progress.to_bytes(), ttl=self._ttl)
        except Exception as exc:  # advisory: a driver keeps training without it
            log.info("could not store this driver's progress: %s", exc)

    async def progress_of(self, driver: str) -> DriverProgress | None:
        """The newest progress record ``driver`` itself signed, or None."""
        newest = None
        for value in await self.net.node.dht.get_values(progress_key(driver)):
            if value.publisher.hex() != driver or (newest is not None and value.timestamp <= newest.timestamp):
                continue
            newest = value
        if newest is None:
            return None
        try:
            return DriverProgress.parse(newest.value, driver)
        except ProgressError as exc:
            log.warning("driver %s published a bad progress record: %s", driver[:12], exc)
            return None

    async def poll(self, *, force: bool = False) -> list[DataStream]:
        """Streams of dead drivers this driver now takes over (at most every poll interval)."""
        loop = asyncio.get_running_loop()
        if not force and loop.time() - self._last_poll < self.poll_interval_s:
            return []
        self._last_poll = loop.time()
        try:
            return await self._check()
        except Exception:  # best effort: training goes on without the check
            log.exception("takeover check failed")
            return []

    async def _check(self) -> list[DataStream]:
        live = await self.net.live_drivers()
        self._known |= live
        adopted: list[DataStream] = []
        for dead in sorted(self._known - live - self._handled - {self.me}):
            progress = await self.progress_of(dead)
            if progress is None or progress.state == "done" or progress.remaining in (None, 0):
                self._handled.add(dead)
                if progress is None:
                    log.warning("driver %s left without a progress record: its steps cannot be taken over",
                                dead[:12])
                continue
            candidates = {self.me}
            for other in live - {self.me}:
                mine = await self.progress_of(other)
                if mine is None or mine.state != "done":
                    candidates.add(other)
            taker = choose_taker(dead, candidates)
            self._handled.add(dead)
            if taker != self.me:
                log.info("driver %s died; %s takes over its %s remaining steps", dead[:12], str(taker)[:12],
                         progress.remaining)
                continue
            try:
                batches = self.open_stream(progress.loader)
            except ValueError as exc:
                log.warning("cannot continue driver %s's data stream: %s", dead[:12], exc)
                continue
            log.info("driver %s died at its step %d (last DiLoCo round): taking over its %d remaining steps",
                     dead[:12], progress.position, progress.remaining)
            self.activity(f"taking over {progress.remaining} steps of driver {dead[:12]}, which stopped")
            adopted.append(DataStream(batches, progress.remaining, adopted_from=dead, start=progress.position))
        return adopted

    async def settle(self) -> list[DataStream]:
        """Own steps done: wait until no other driver is still training (returning early with any
        stream taken over meanwhile); bounded by ``takeover_wait_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.takeover_wait_s
        while True:
            adopted = await self.poll(force=True)
            if adopted:
                return adopted
            training = await self._still_training()
            if not training:
                return []
            if loop.time() >= deadline:
                log.warning("stopped waiting after %.0f s for driver(s) %s to finish; if one dies now, "
                            "nobody takes over its steps", self.config.takeover_wait_s,
                            ", ".join(d[:12] for d in sorted(training)))
                return []
            self.activity(f"own steps done; waiting for {len(training)} other driver(s) to finish")
            await asyncio.sleep(self.poll_interval_s)

    async def _still_training(self) -> set[str]:
        """Live drivers whose record says they still train a bounded plan (one we could take over)."""
        out = set()
        for driver in await self.net.live_drivers() - {self.me}:
            progress = await self.progress_of(driver)
            if progress is not None and progress.state == "training" and progress.planned is not None:
                out.add(driver)
        return out
