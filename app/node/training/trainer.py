"""NodeTrainer: one node's training job, whatever its role.

A *driver* (it holds the embedding) pulls batches, runs steps through its PipelineDriver and
retries a stalled step with the same batch until it commits, so a step is neither dropped nor
counted twice. A *worker* or *validator* only serves stage calls; its steps are the commits it
applies. Either way every applied step is reported as a :class:`StepInfo` to the ``on_step`` sink
(events, the economy service building Proof-of-Neural-Work), the DiLoCo round runs when due,
and the node checkpoints every ``checkpoint_every`` steps and when it stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from app.node.training.checkpointing import save_training_state
from app.node.training.config import TrainingConfig
from app.node.training.pipeline import PipelineDriver, PipelineStalled
from app.node.training.stage import CommitInfo, StageWorker
from app.node.training.sync import StageSync
from app.node.training.takeover import DataStream, DriverProgress

log = logging.getLogger("neuroshard.training")

BatchSource = Callable[[], torch.Tensor]  # -> [B, T+1] token ids

WORKER_POLL_S = 0.5
"""How often a serving node checks whether its drivers are done (a DHT lookup each time)."""
Proceed = Callable[[], Awaitable[bool]]


class Takeover(Protocol):
    async def publish(self, progress: DriverProgress) -> None: ...
    async def poll(self) -> list[DataStream]: ...
    async def settle(self) -> list[DataStream]: ...


@dataclass(frozen=True)
class StepInfo:
    """One applied step on this node: what the economy needs to build a proof of work."""

    step: int
    loss: float
    tokens: int
    batches: int  # micro-batches in the step
    layers: tuple[int, int]
    role: str
    hash_before: str
    hash_after: str
    tokens_per_s: float
    inner_step: int
    inner_steps_per_sync: int
    driver: str
    tokens_total: int  # tokens this node applied this session, this step's included


def roles_of(stage: StageWorker) -> tuple[str, ...]:
    roles = []
    if stage.is_first:
        roles.append("driver")
    if not stage.is_first and not stage.is_last:
        roles.append("worker")
    if stage.is_last:
        roles.append("validator")
    return tuple(roles)


@dataclass
class NodeTrainer:
    """The stage reaches its trainer through the hooks it was built with: ``record_commit`` and
    ``after_commit`` (a stage the trainer no longer serves is ignored, see ``replace_stage``)."""

    node_id: str
    stage: StageWorker
    config: TrainingConfig
    sync: StageSync | None = None
    driver: PipelineDriver | None = None
    batches: BatchSource | None = None
    proceed: Proceed | None = None
    data_dir: Path | None = None
    loader_state: Callable[[], dict[str, Any]] | None = None
    on_activity: Callable[[str], None] = lambda _text: None
    on_step: Callable[[StepInfo], None] | None = None
    """Told every applied step (called on an executor thread): events, the economy's PoNW."""
    live_drivers: Callable[[], Awaitable[set[str]]] | None = None
    """Drivers currently announced (a serving node is done when all of them said finish); default:
    the drivers this stage has served."""
    after_step: Callable[[], Awaitable[None]] | None = None
    takeover: Takeover | None = None
    """A driver's link to the other drivers' progress (runtime/takeover_service.py): it publishes
    its own and takes over the streams of drivers that died; None: no takeover (alone, tests)."""
    driver_step: int = 0  # the driver's next step number (a resumed driver starts from its checkpoint's)
    checkpointed_at: int = -1  # stage.inner_step at the last save (a resumed node: the restored one)
    steps_this_session: int = field(default=0, init=False)
    tokens_total: int = field(default=0, init=False)
    _stopping_drive: bool = field(default=False, init=False)  # the pool moves this driver (healing)
    _drive_ended: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _last_commit_at: float = field(default_factory=time.perf_counter, init=False)
    _streams: list[DataStream] = field(default_factory=list, init=False)  # own first, then adopted
    _settling: bool = field(default=False, init=False)
    _publishing: asyncio.Future[None] | None = field(default=None, init=False)

    @property
    def role(self) -> str:
        return "+".join(roles_of(self.stage))

    async def stop_driving(self) -> None:
        """Finish the step in flight, tell the stages ``finish``, and return once driving ended;
        ``run`` then serves the stage ``replace_stage`` hands over. Nothing to do when not driving."""
        if self.driver is None:
            return
        self._stopping_drive = True
        await self._drive_ended.wait()

    # --- the job --------------------------------------------------------------------------------
    async def run(self, max_steps: int | None) -> int:
        """Train (driver) or serve (others) until ``max_steps`` steps or a stop; returns steps."""
        if self.driver is not None:
            await self._drive(max_steps)
            if self._streams and not self._stopping_drive:
                await self._publish(self._streams[0], "done")
            await self.driver.finish()
            self._drive_ended.set()
            if self._stopping_drive:  # moved to a later stage: serve there until the drivers finish
                await self._wait_for_stage_change()
                # A bounded run also ends when every driver left (even if none routed to the new
                # stage, which is then never told "finish"); an unbounded one serves on.
                await self._serve(None if max_steps is None else max(1, max_steps))
        else:
            await self._serve(max_steps)
        self.checkpoint()
        return self.steps_this_session

    async def _drive(self, max_steps: int | None) -> None:
        """Train this driver's own stream, and, round robin with it, the streams of dead drivers it
        took over (training/takeover.py), until all are done or a stop."""
        assert self.driver is not None and self.batches is not None
        own = DataStream(self.batches, max_steps)
        self._streams = [own]
        await self._publish(own, "training")
        try:
            await self._drive_streams(own)
        finally:
            if self.sync is not None:
                self.sync.note_own_steps(0)

    async def _drive_streams(self, own: DataStream) -> None:
        turn = 0
        while True:
            if self._stopping_drive or (self.proceed is not None and not await self.proceed()):
                return
            if self.takeover is not None:
                self._adopt(await self.takeover.poll())
            stream = next((s for s in self._streams if s.pending is not None), None)  # a stalled step first
            active = [s for s in self._streams if not s.exhausted]
            self._note_steps_left()
            if stream is None and not active:
                if own.exhausted and self.takeover is not None and not self._settling:
                    self._settling = True
                    await self._publish(own, "settling")
                more = await self.takeover.settle() if self.takeover is not None else []
                if not more:
                    return
                self._adopt(more)
                continue
            if stream is None:
                stream = active[turn % len(active)]
                turn += 1
            batch = stream.next_batch()
            self.on_activity(self._step_text(stream))
            rounds = self.sync.rounds if self.sync is not None else 0
            try:
                await self.driver.train_step(self.driver_step, batch)
            except PipelineStalled as exc:
                self.on_activity(f"waiting for a stage holder ({exc})")
                await asyncio.sleep(1.0)
                continue  # same step number, same batch: stages deduplicate what they already hold
            self.driver_step += 1
            stream.committed()
            self._note_steps_left()
            if self.after_step is not None:
                await self.after_step()
            if self.sync is not None and self.sync.rounds != rounds:  # a round now holds our steps so far
                await self._publish(own, "training")
            if self.driver_step % self.config.checkpoint_every == 0:
                await asyncio.get_running_loop().run_in_executor(self.stage.executor, self.checkpoint)

    def _note_steps_left(self) -> None:
        """Tell the sync how many steps our streams still hold (a cohort member at a round's end
        waits for our payload when we will get there too)."""
        if self.sync is None:
            return
        bounded = all(s.planned is not None for s in self._streams)
        self.sync.note_own_steps(sum(max(0, (s.planned or 0) - s.done) for s in self._streams) if bounded else None)

    def _adopt(self, streams: list[DataStream]) -> None:
        """Add dead drivers' streams, each at most as long as our own plan: a published plan is a
        peer's claim, and a made-up huge one must not keep this driver training for it forever."""
        own = self._streams[0].planned
        for stream in streams:
            if own is not None and (stream.planned is None or stream.planned > own):
                stream.planned = own
            self._streams.append(stream)

    def _step_text(self, stream: DataStream) -> str:
        total = "" if stream.planned is None else f" of {stream.planned}"
        if stream.adopted_from:
            return f"training step {stream.done + 1}{total} taken over from driver {stream.adopted_from[:12]}"
        return f"training step {stream.done + 1}{total}"

    async def _publish(self, own: DataStream, state: str) -> None:
        """Publish our progress; while training it is stored in the background (a DHT store must
        not hold the next step back, or drivers drift apart and close DiLoCo rounds alone)."""
        if self.takeover is None:
            return
        loader = self.loader_state() if self.loader_state is not None else {}
        progress = DriverProgress(self.node_id, own.done, own.planned, loader, state)
        previous, self._publishing = self._publishing, None
        if previous is not None:  # in order: the newest record must be the last one stored
            await previous
        if state == "training":
            self._publishing = asyncio.ensure_future(self.takeover.publish(progress))
        else:
            await self.takeover.publish(progress)

    @property
    def own_steps(self) -> int:
        """Steps of this driver's own plan committed this session (a serving node: steps applied)."""
        return self._streams[0].done if self._streams else self.steps_this_session

    def taken_over(self) -> list[dict[str, Any]]:
        """The dead drivers' streams this driver trained: whose, from which of their steps, how many."""
        return [s.report() for s in self._streams[1:]]

    async def _serve(self, max_steps: int | None) -> None:
        """Serve until every driver we served said it finished (or, alone, until a stop)."""
        ever_live = False
        while True:
            if self.proceed is not None and not await self.proceed():
                return
            finished, seen = self.stage.finished_drivers, self.stage.seen_drivers
            drivers = await self.live_drivers() if self.live_drivers is not None else seen
            if (seen or finished) and drivers <= finished:
                # every driver still alive said it finished (or none is left); an idle replica
                # hears "finish" too, so it leaves (and follows its cohort) while the others linger
                return
            ever_live = ever_live or bool(drivers)
            if max_steps is not None and ever_live and not drivers:
                return  # a bounded run whose drivers all left without ever routing to us
            if max_steps == 0:
                return
            waiting = len(drivers - finished) if drivers else 0
            self.on_activity(f"serving {waiting} driver(s) until they finish" if waiting else "serving; no driver yet")
            await asyncio.sleep(WORKER_POLL_S)

    def replace_stage(self, stage: StageWorker, sync: StageSync | None) -> None:
        """Serve another stage from now on (the pool moved this node; call ``stop_driving`` first).
        The old stage may still finish a request in flight: its hooks are ignored from now on, so
        it no longer reports steps or runs DiLoCo rounds as if it were the new stage."""
        self.stage, self.sync, self.driver, self.batches = stage, sync, None, None
        self.checkpointed_at = -1

    async def _wait_for_stage_change(self) -> None:
        while self.driver is not None:
            await asyncio.sleep(0.1)

    def checkpoint(self) -> Path | None:
        """Save now unless nothing was applied since the last save (saves are big: weights,
        AdamW moments and the DiLoCo anchor and momentum)."""
        if self.data_dir is None or self.stage.inner_step == self.checkpointed_at:
            return None
        self.checkpointed_at = self.stage.inner_step
        state = self.loader_state() if self.loader_state is not None else None
        return save_training_state(self.data_dir, self.stage, self.sync, driver_step=self.driver_step,
                                   loader_state=state, node_id=self.node_id)

    # --- per-step bookkeeping -------------------------------------------------------------------
    def record_commit(self, stage: StageWorker, info: CommitInfo) -> None:
        """The stage's commit hook (stage.CommitHook): report the applied step."""
        # Called with the stage's lock held, right after the optimizer changed the weights in
        # place. Forward graphs of another driver's micro-batches in flight (two drivers share one
        # holder after a failover) are recomputed by the stage at their backward (stage.py).
        if stage is not self.stage:
            return
        now = time.perf_counter()
        elapsed, self._last_commit_at = now - self._last_commit_at, now
        self.steps_this_session += 1 if self.driver is None or info.driver == self.driver.driver_id else 0
        self.tokens_total += info.tokens
        step = StepInfo(
            step=info.step if self.driver is not None else self.stage.inner_step - 1, loss=info.loss,
            tokens=info.tokens, batches=info.microbatches, layers=self.stage.layer_range, role=self.role,
            hash_before=info.hash_before, hash_after=info.hash_after,
            tokens_per_s=info.tokens / elapsed if elapsed > 0 else 0.0, inner_step=self._inner_in_round(),
            inner_steps_per_sync=self.config.inner_steps, driver=info.driver, tokens_total=self.tokens_total)
        if self.on_step is not None:
            try:
                self.on_step(step)
            except Exception:  # a broken sink must not stop training
                log.exception("step sink failed")

    def _inner_in_round(self) -> int:
        return (self.sync.replica.inner_steps_done + 1) if self.sync is not None else 0

    async def after_commit(self, stage: StageWorker) -> None:
        """The stage's after-commit hook: DiLoCo when a round is due; a serving node also
        checkpoints here (a driver does it in its loop, with its data position)."""
        if stage is not self.stage:
            return
        if self.sync is not None:
            self.sync.note_commit()
            if self.sync.due:
                self.on_activity("averaging")
                await self.sync.sync()
        if self.driver is None and self.stage.inner_step % self.config.checkpoint_every == 0:
            await asyncio.get_running_loop().run_in_executor(self.stage.executor, self.checkpoint)
