"""NodeRuntime: what a node does between the engine's start and stop.

It composes small services: the network (network.py), the data (data_service.py), the layer
assignment (planner.py) and the training job (training/trainer.py over the P2P transport of
p2p_transport.py). Steps are reported as StepDone events and to ``subscribe_work`` listeners
(the economy service builds Proof-of-Neural-Work from them); ``run_summary.json`` in the data
dir records what the run did (the devnet reads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from app.node.config import atomic_write_bytes
from app.node.events import (
    ActivityChanged,
    Command,
    LayersAssigned,
    ModesChanged,
    NodeState,
    Query,
    SetModes,
    StepDone,
    UpgradeAvailable,
)
from app.node.hardware import layers_that_fit, memory_budget_bytes
from app.node.model.checkpoint import CheckpointError
from app.node.p2p.records import LayerAnnouncement
from app.node.runtime.async_service import AsyncService
from app.node.runtime.data_service import DataService
from app.node.runtime.network import NetworkService
from app.node.runtime.p2p_transport import P2PCohort, P2PStageTransport, P2PWeights, stage_server
from app.node.runtime.planner import Planner
from app.node.runtime.quorum_service import QuorumService
from app.node.runtime_api import RuntimeContext
from app.node.training.checkpointing import ResumePoint, read_resume_point, restore_training_state
from app.node.training.config import TrainingConfig
from app.node.training.layer_pool import Assignment, NodeOffer
from app.node.training.pipeline import PipelineDriver
from app.node.training.stage import StageWorker, build_shard
from app.node.training.sync import StageSync
from app.node.training.trainer import NodeTrainer, StepInfo

log = logging.getLogger("neuroshard.runtime")

SUMMARY_FILE = "run_summary.json"
WORK_LOG_SIZE = 1000


class NodeRuntime:
    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.training = TrainingConfig.from_dict(ctx.config.training)
        self.arch = self.training.architecture()
        self.steps_done = 0
        self.net: NetworkService | None = None
        self.data: DataService | None = None
        self.stage: StageWorker | None = None
        self.sync: StageSync | None = None
        self.trainer: NodeTrainer | None = None
        self.driver: PipelineDriver | None = None
        self.quorums: QuorumService | None = None
        self.assignment: Assignment | None = None
        self.async_service: AsyncService | None = None
        self.modes: tuple[str, ...] = ctx.config.modes or ("pipeline", "data")
        self.work_log: deque[StepInfo] = deque(maxlen=WORK_LOG_SIZE)
        self._work_listeners: list[Callable[[StepInfo], None]] = []
        self._losses: list[float] = []
        self._activity = ""
        self._started_at = time.time()

    # --- public hooks ------------------------------------------------------------------------
    def subscribe_work(self, listener: Callable[[StepInfo], None]) -> None:
        """``listener(StepInfo)`` after every step this node applied (called off the loop thread)."""
        self._work_listeners.append(listener)

    def activity(self, text: str) -> None:
        if text != self._activity:
            self._activity = text
            self.ctx.emit(ActivityChanged(activity=text))

    # --- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> int:
        await self._start()
        max_steps = self.config.max_steps
        if max_steps == 0:
            self.activity("started; --max-steps 0 so stopping")
            return 0
        if self.async_service is not None:
            self.ctx.set_state(NodeState.TRAINING, "async")
            self.steps_done = await self.async_service.run(max_steps)
            self.write_summary()
            return 0
        assert self.trainer is not None
        self.ctx.set_state(NodeState.TRAINING, "+".join(self.assignment.roles if self.assignment else ()))
        pause_watch = asyncio.ensure_future(self._watch_pause())
        try:
            self.steps_done = await self.trainer.run(max_steps)
        finally:
            pause_watch.cancel()
        self.activity("finished; staying a moment for peers")
        await self.ctx.control.sleep(self.training.linger_s)
        self.write_summary()
        return 0

    async def shutdown(self) -> None:
        """Leave the network first (fast), then save what run() did not (only when cancelled)."""
        if self.net is not None:
            await self.net.stop()
        if self.trainer is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(None, self.trainer.checkpoint)
            self.write_summary()

    # --- start-up ------------------------------------------------------------------------------
    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        key = await loop.run_in_executor(None, _load_key, self.config)
        self.net = NetworkService(key, host=self.config.host, port=self.config.port, trackers=self.config.trackers,
                                  listen=self.config.listen, p2p=dict(self.config.p2p), emit=self.ctx.emit)
        hw = self.ctx.hardware
        memory = memory_budget_bytes(hw.device, self.config.limits.memory_fraction, self.config.limits.memory_bytes)
        layers_fit = layers_that_fit(memory, self.arch.train_bytes_per_layer())
        self.activity("joining the network")
        wants_async = self._wants_async()  # async nodes offer no layers, so planners skip them
        await self.net.start(hw.tier.value, 0 if wants_async else layers_fit)
        node_id = self.net.node_id
        self.data = DataService(self.config.data_dir, node_id, seed=self.config.seed)
        await self.data.open()
        self.net.node.set_data_handler(self.data.serve)
        if not self.net.solo and wants_async:
            self._start_async(memory)
            return
        resume = self._resume_point()
        me = NodeOffer(node_id, layers_fit, memory, hw.tier.value)
        planner = Planner(self.net, self.arch, self.training, self.activity)
        log.info("network up as %s; planning layers", node_id[:12])
        self.assignment = _assignment_from(resume, node_id) if resume else await planner.assign(me)
        log.info("assigned layers %s; building the stage", self.assignment.layer_range)
        await self._build_stage(self.assignment, resume)
        await self._announce(hw.tier.value, layers_fit)
        log.info("layers announced")
        self._emit_layers()
        if planner.upgrade is not None:
            u = planner.upgrade
            self.ctx.emit(UpgradeAvailable(current_version=u.current.version, candidate_version=u.candidate.version,
                                           current_parameters=u.current.param_count(),
                                           candidate_parameters=u.candidate.param_count()))
        await self._build_trainer(resume)

    def _wants_async(self) -> bool:
        """Async mode when the volunteer chose it over pipeline, or, left to the policy, on a T5
        machine (too slow for a live pipeline, modes.py). A lone node always trains the model."""
        if self.config.modes is not None:
            return "async" in self.config.modes and "pipeline" not in self.config.modes
        return self.ctx.hardware.tier.value == "T5"

    def _start_async(self, memory: int) -> None:
        assert self.net is not None and self.data is not None
        self.async_service = AsyncService(
            self.net, self.arch, self.training, self.data, emit=self.ctx.emit, activity=self.activity,
            proceed=self.ctx.control.proceed, stop_requested=lambda: self.ctx.control.stop_requested,
            memory_budget_bytes=memory)
        self.ctx.emit(LayersAssigned(first_layer=0, last_layer=self.arch.layers, roles=("async",),
                                     architecture_version=self.arch.version, total_layers=self.arch.layers,
                                     hidden=self.arch.hidden, parameters=self.arch.param_count()))

    def _resume_point(self) -> ResumePoint | None:
        try:
            point = read_resume_point(self.config.data_dir)
        except CheckpointError as exc:
            log.warning("ignoring unusable checkpoint: %s", exc)
            return None
        if point is not None and point.arch.to_dict() != self.arch.to_dict():
            log.warning("checkpoint is for another architecture; starting fresh")
            return None
        return point

    async def _build_stage(self, a: Assignment, resume: ResumePoint | None) -> None:
        assert self.net is not None
        shard = build_shard(self.arch, a.layer_range, with_embedding=a.with_embedding, with_head=a.with_head,
                            seed=self.training.init_seed)
        self.stage = StageWorker(shard, self.training, executor=self.ctx.executor)
        cohort = P2PCohort(self.net.node)
        self.sync = StageSync(self.net.node_id, self.stage, cohort, self.training,
                              on_start=lambda: self.activity("averaging"))
        if resume is not None:
            self.activity("resuming from checkpoint")
            restore_training_state(resume, self.stage, self.sync)
        elif a.download_from is not None:
            self.activity("downloading layers")
            state = await P2PWeights(self.net.node).fetch(a.layer_range)
            self.stage.load_weights(state)
            self.sync.replica.reset_anchor()
        self.net.node.set_stage_handler(stage_server(self.stage.handle))
        self.net.node.set_sync_handler(cohort.handle)
        self.net.node.set_weights_handler(self._serve_weights)

    async def _serve_weights(self, meta: dict[str, Any]) -> dict[str, Any]:
        assert self.stage is not None
        if list(meta.get("range", [])) != list(self.stage.layer_range):
            from app.node.p2p.errors import StageRejected

            raise StageRejected(f"this node holds layers {self.stage.layer_range}, not {meta.get('range')}")
        return await asyncio.get_running_loop().run_in_executor(self.ctx.executor, self.stage.state_for_transfer)

    async def _announce(self, tier: str, layers_fit: int) -> None:
        assert self.net is not None and self.stage is not None
        first, last = self.stage.layer_range
        ttl = self.net.node.config.heartbeat_timeout_s
        await self.net.node.registry.announce(LayerAnnouncement(first, last, tier=tier,
                                                                capacity=float(layers_fit), ttl=ttl))

    def _emit_layers(self) -> None:
        assert self.stage is not None and self.assignment is not None
        first, last = self.stage.layer_range
        self.ctx.emit(LayersAssigned(first_layer=first, last_layer=last, roles=self.assignment.roles,
                                     architecture_version=self.arch.version, total_layers=self.arch.layers,
                                     hidden=self.arch.hidden, parameters=self.arch.param_count()))

    async def _build_trainer(self, resume: ResumePoint | None) -> None:
        assert self.net is not None and self.stage is not None and self.data is not None
        t = self.training
        transport = P2PStageTransport(self.net.node)
        if self.stage.is_first:
            starts = await self._stage_starts()
            self.driver = PipelineDriver(self.net.node_id, self.stage, starts, transport if starts else None,
                                         micro_batches=t.micro_batches, max_attempts=t.max_microbatch_attempts,
                                         proceed=self.ctx.control.proceed)
            self.data.open_loader(t.batch_size, min(t.seq_len, self.arch.max_seq))
            if resume is not None:
                self.data.restore_loader(resume.counters.get("loader") or {})
            self.quorums = QuorumService(self.net, self.driver, self.arch, t, self.ctx.emit)
            await self.quorums.form()
        self.trainer = NodeTrainer(
            self.net.node_id, self.stage, t, sync=self.sync, driver=self.driver,
            batches=self.data.next_batch if self.driver else None, proceed=self.ctx.control.proceed,
            data_dir=self.config.data_dir, loader_state=self.data.loader_state, on_activity=self.activity,
            live_drivers=self._live_drivers if not self.stage.is_first else None,
            after_step=self.quorums.tick if self.quorums else None)
        if resume is not None:
            self.trainer.driver_step = resume.driver_step
            self.trainer.checkpointed_at = self.stage.inner_step
        self.trainer.subscribe(self._on_step)

    async def _stage_starts(self) -> list[int]:
        """First layers of the later stages, from the announcements (the plan's bounds)."""
        assert self.net is not None and self.stage is not None
        starts, layer = [], self.stage.layer_range[1]
        deadline = asyncio.get_running_loop().time() + max(10.0, self.training.join_wait_s * 10)
        while layer < self.arch.layers:
            holders = [r for r in await self.net.node.who_holds(layer) if r.layer_start == layer]
            if not holders:
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"no node holds layer {layer}; the network cannot train yet")
                self.activity(f"waiting for a holder of layer {layer}")
                await asyncio.sleep(0.3)
                continue
            starts.append(layer)
            layer = max(r.layer_end for r in holders)
        return starts

    async def _live_drivers(self) -> set[str]:
        assert self.net is not None
        return {r.node_id.hex() for r in await self.net.node.who_holds(0) if r.layer_start == 0}

    # --- per step ------------------------------------------------------------------------------
    def _on_step(self, info: StepInfo) -> None:
        self.work_log.append(info)
        if math.isfinite(info.loss):
            self._losses.append(info.loss)
        total = self.trainer.tokens_total if self.trainer else 0
        self.ctx.emit(StepDone(step=info.step + 1, loss=info.loss, tokens_per_s=round(info.tokens_per_s, 1),
                               tokens_total=total, inner_step=info.inner_step,
                               inner_steps_per_sync=info.inner_steps_per_sync))
        for listener in list(self._work_listeners):
            try:
                listener(info)
            except Exception:
                log.exception("work listener failed")

    async def _watch_pause(self) -> None:
        paused = False
        while True:
            if self.ctx.control.paused != paused:
                paused = self.ctx.control.paused
                self.ctx.set_state(NodeState.PAUSED if paused else NodeState.TRAINING, "paused by the volunteer"
                                   if paused else "")
            await asyncio.sleep(0.2)

    # --- commands ------------------------------------------------------------------------------
    async def handle(self, command: Command) -> Any:
        if isinstance(command, SetModes):
            self.modes = tuple(command.modes)
            self.ctx.emit(ModesChanged(active=self.modes, proposed=self.modes))
            return self.modes
        if isinstance(command, Query):
            return await self._query(command.what)
        raise ValueError(f"this node does not handle the command {command.name!r}")

    async def _query(self, what: str) -> Any:
        if what == "status":
            return self.summary()
        if what == "peers":
            peers = await self.net.peers() if self.net else []
            return [{"node_id": r.node_id.hex(), "address": r.dial, "tier": r.tier,
                     "layers": [r.layer_start, r.layer_end], "latency_ms": r.latency_ms} for r in peers]
        if what == "layers":
            return self.stage.layer_hashes() if self.stage else {}
        raise ValueError(f"unknown query {what!r}; ask for status, peers or layers")

    def summary(self) -> dict[str, Any]:
        if self.async_service is not None:
            return self._async_summary()
        stats = self.net.node.stats.snapshot() if self.net else {}
        router = self.net.node.router.failovers if self.net else 0
        return {
            "node_id": self.net.node_id if self.net else "", "roles": list(self.assignment.roles if self.assignment else ()),
            "layer_range": list(self.stage.layer_range) if self.stage else [],
            "steps": self.trainer.steps_this_session if self.trainer else 0,
            "driver_step": self.trainer.driver_step if self.trainer else 0,
            "inner_steps": self.stage.inner_step if self.stage else 0,
            "loss_first": self._losses[0] if self._losses else None,
            "loss_last": self._losses[-1] if self._losses else None,
            "tokens": self.trainer.tokens_total if self.trainer else 0,
            "bytes_sent": stats.get("sent", {}), "failovers": (self.driver.failovers if self.driver else 0),
            "router_failovers": router, "replays": self.driver.replays if self.driver else 0,
            "sync_rounds": self.sync.rounds if self.sync else 0,
            "layer_hashes": self.stage.layer_hashes() if self.stage else {},
            "quorum": self.quorums.record() if self.quorums else None,
            "solo": self.net.solo if self.net else True, "activity": self._activity,
        }

    def _async_summary(self) -> dict[str, Any]:
        a = self.async_service
        assert a is not None and self.net is not None
        return {"node_id": self.net.node_id, "roles": ["async"], "layer_range": [], "steps": a.rounds,
                "loss_first": a.losses[0] if a.losses else None, "loss_last": a.losses[-1] if a.losses else None,
                "tokens": a.tokens_total, "bytes_sent": self.net.node.stats.snapshot().get("sent", {}),
                "failovers": 0, "router_failovers": 0, "replays": 0, "sync_rounds": 0, "layer_hashes": {},
                "quorum": None, "solo": False, "activity": self._activity}

    def write_summary(self) -> None:
        with contextlib.suppress(OSError):
            atomic_write_bytes(self.config.data_dir / SUMMARY_FILE, json.dumps(self.summary()).encode())


def _assignment_from(point: ResumePoint, node_id: str) -> Assignment:
    return Assignment(node_id, -1, point.layer_range, point.with_embedding, point.with_head)


def _load_key(config: Any) -> Any:
    """The node's identity (app/node/identity.py); an ephemeral key until that module exists."""
    try:
        from app.node.identity import load_node_key
    except ModuleNotFoundError:
        from app.wallet.keys import PrivateKey

        log.warning("app.node.identity is missing: using an ephemeral node key for this run")
        return PrivateKey.generate()
    return load_node_key(config)
