"""NodeRuntime: what a node does between the engine's start and stop.

It composes small services: the network (network.py), the data (data_service.py), the layer
assignment (planner.py) and the training job (training/trainer.py over the P2P transport of
p2p_transport.py). Steps are reported as StepDone events and to ``subscribe_work`` listeners
(the economy service builds Proof-of-Neural-Work from them); ``run_summary.json`` in the data
dir records what the run did (the devnet reads it).

Training runs on the device the engine measured (``ctx.hardware.device``: ``cuda:N`` from
limits.gpu_ids, ``mps`` or ``cpu``) once one real step there matched the CPU
(training/device_check.py); a device that fails the check is reported as an error event and the
node trains on the CPU, with its tier and memory re-derived for the CPU so it advertises what it
will actually do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from app.node.checkpoint_recovery import recover_unusable_checkpoints
from app.node.config import atomic_write_bytes
from app.node.economics.governance import Proposal
from app.node.events import (
    ActivityChanged,
    CheckpointSetAside,
    Command,
    ErrorOccurred,
    LayersAssigned,
    NodeState,
    Query,
    SetModes,
    StepDone,
    UpgradeAvailable,
    VocabularyChanged,
)
from app.node.faults import resolve_policy
from app.node.hardware import (
    DeviceInfo,
    layers_that_fit,
    measure_ms_per_layer,
    memory_budget_bytes,
    tier_for_ms,
)
from app.node.model.checkpoint import CheckpointError, CheckpointsUnusable
from app.node.model.shard import ModelShard
from app.node.p2p.records import LayerAnnouncement
from app.node.runtime.async_service import AsyncService
from app.node.runtime.data_service import DataService
from app.node.runtime.economy_link import EconomyLink
from app.node.runtime.heal_service import HealService
from app.node.runtime.mode_service import ModeService, free_disk_bytes
from app.node.runtime.network import NetworkService, load_identity
from app.node.runtime.p2p_transport import (
    SYNC_POSITION,
    P2PCohort,
    P2PStageTransport,
    P2PWeights,
    stage_server,
    weights_server,
)
from app.node.runtime.planner import Planner
from app.node.runtime.quorum_service import QuorumService
from app.node.runtime.vocab_service import VocabService
from app.node.runtime_api import RuntimeContext
from app.node.training.arch_guard import ArchTaggedTransport
from app.node.training.async_mode import snapshot_fits
from app.node.training.checkpointing import (
    ResumePoint,
    checkpoint_path,
    read_resume_point,
    restore_training_state,
)
from app.node.training.config import TrainingConfig
from app.node.training.device_check import check_training_device
from app.node.training.layer_pool import Assignment, NodeOffer
from app.node.training.pipeline import PipelineDriver
from app.node.training.speed import plan_speed
from app.node.training.stage import CommitInfo, StageWorker, build_shard
from app.node.training.sync import StageSync
from app.node.training.trainer import NodeTrainer, StepInfo
from app.node.training.transport import RetryElsewhere

log = logging.getLogger("neuroshard.runtime")

SUMMARY_FILE = "run_summary.json"
FOLLOW_DELAY_S = 2.0
"""An idle replica waits this long after a peer's payload before copying the peer's weights, so the
peer has applied the round's outer step (its own wait is bounded by sync_timeout_s)."""
WORK_LOG_SIZE = 1000


class NodeRuntime:
    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.training = TrainingConfig.from_dict(ctx.config.training)
        self.arch = self.training.architecture()
        self.steps_done = 0
        self.device = "cpu"  # the training device, settled at start (_settle_device)
        self.net: NetworkService | None = None
        self.data: DataService | None = None
        self.stage: StageWorker | None = None
        self.sync: StageSync | None = None
        self.trainer: NodeTrainer | None = None
        self.driver: PipelineDriver | None = None
        self.quorums: QuorumService | None = None
        self.assignment: Assignment | None = None
        self.async_service: AsyncService | None = None
        self.cohort: P2PCohort | None = None
        self.heal: HealService | None = None
        self.economy: EconomyLink | None = None
        self.vocab: VocabService | None = None
        self._offer: tuple[str, int] = ("", 0)
        self._memory_budget: int | None = None  # bytes the model may take here, settled at start
        self._drove: PipelineDriver | None = None  # kept after a move, for the run's figures
        self._following: asyncio.Future[None] | None = None
        self._move_lock = asyncio.Lock()
        self._swapping = False  # between replacing the stage and announcing it (see _busy)
        self.modes: tuple[str, ...] = ctx.config.modes or ("pipeline", "data")
        self.mode_service: ModeService | None = None
        self.work_log: deque[StepInfo] = deque(maxlen=WORK_LOG_SIZE)
        self._work_listeners: list[Callable[[StepInfo], None]] = []
        self._losses: list[float] = []
        self._activity = ""
        self._started_at = time.time()
        self._checkpoints_lost: CheckpointsUnusable | None = None  # both copies failed verification

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
            if self.stage is not None and _idle(self.stage) and self.net is not None and not self.net.solo:
                # an idle replica ends on the weights its cohort ended on (the drivers are done)
                await self._follow(None, self.stage.layer_range, delay_s=0.0)
        finally:
            pause_watch.cancel()
            if self.heal is not None:
                await self.heal.stop()
        self.activity("finished; staying a moment for peers")
        await self.ctx.control.sleep(self.training.linger_s)
        self.write_summary()
        return 0

    async def shutdown(self) -> None:
        """Leave the network first (fast), then save what run() did not (only when cancelled)."""
        if self.heal is not None:
            await self.heal.stop()
        if self.economy is not None:
            await self.economy.stop()
        if self.vocab is not None:
            await self.vocab.stop()
        if self.net is not None:
            await self.net.stop()
        if self.trainer is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(None, self.trainer.checkpoint)
            self.write_summary()

    # --- start-up ------------------------------------------------------------------------------
    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        key = await loop.run_in_executor(None, load_identity, self.config)
        self.net = NetworkService(key, host=self.config.host, port=self.config.port, trackers=self.config.trackers,
                                  listen=self.config.listen, p2p=dict(self.config.p2p), emit=self.ctx.emit,
                                  tls_dir=self.config.data_dir / "tls", data_dir=self.config.data_dir)
        self.ctx.usage.subscribe(self.net.apply_caps)  # the volunteer's upload/download caps, live
        self.economy = EconomyLink(self.ctx, self.net, key, self.subscribe_work)
        self.vocab = VocabService(self.config.data_dir, self._proposals)
        self.arch = self.vocab.architecture(self.arch)
        self.vocab.listeners.append(self._on_vocabulary)
        self._emit_vocabulary()
        self.vocab.start()
        info, tier = await self._settle_device()
        memory = memory_budget_bytes(info, self.config.limits.memory_fraction, self.config.limits.memory_bytes)
        layers_fit = layers_that_fit(memory, self.arch.train_bytes_per_layer())
        self._memory_budget = memory
        self.mode_service = ModeService(
            tier=tier, layers_fit=layers_fit, fits_full_model=snapshot_fits(self.arch, memory),
            data_dir_free=lambda: free_disk_bytes(str(self.config.data_dir)), staked_units=self._staked_units,
            emit=self.ctx.emit)
        self.modes = self.mode_service.start(self.config.modes)
        self.activity("joining the network")
        wants_async = self._wants_async()  # async nodes offer no layers, so planners skip them
        await self.net.start(tier, 0 if wants_async else layers_fit)
        node_id = self.net.node_id
        self.economy.start(verify_arch=(lambda: self.arch) if "verify" in self.modes else None)
        self.data = DataService(self.config.data_dir, node_id, seed=self.config.seed,
                                corpus_dir=self.training.corpus_dir,
                                genesis_public_key=self.training.genesis_public_key)
        await self.data.open()
        self.net.node.set_data_handler(self.data.serve)
        if not self.net.solo and wants_async:
            self._start_async(memory)
            return
        resume = self._resume_point()
        me = NodeOffer(node_id, layers_fit, memory, tier)
        planner = Planner(self.net, self.arch, self.training, self.activity)
        log.info("network up as %s; planning layers", node_id[:12])
        self.assignment = _assignment_from(resume, node_id) if resume else await planner.assign(me)
        log.info("assigned layers %s; building the stage", self.assignment.layer_range)
        await self._build_stage(self.assignment, resume)
        if self._checkpoints_lost is not None:
            await self._recover_lost_checkpoints(self._checkpoints_lost)
        self._offer = (tier, layers_fit)
        await self._announce(*self._offer)
        log.info("layers announced")
        self._emit_layers()
        if planner.upgrade is not None:
            u = planner.upgrade
            self.ctx.emit(UpgradeAvailable(current_version=u.current.version, candidate_version=u.candidate.version,
                                           current_parameters=u.current.param_count(),
                                           candidate_parameters=u.candidate.param_count()))
        await self._build_trainer(resume)

    async def _settle_device(self) -> tuple[DeviceInfo, str]:
        """The device to train on, its info and speed tier: the measured device when one training
        step there matches the CPU; else the CPU, re-measured, with an error event saying why."""
        hw = self.ctx.hardware
        requested = hw.device.torch_device
        if hw.device.device == "cpu":
            self.device = "cpu"
            return hw.device, hw.tier.value
        loop = asyncio.get_running_loop()
        self.activity(f"checking that {requested} trains correctly")
        check = await loop.run_in_executor(None, check_training_device, requested)
        self.device = check.device
        if check.ok:
            log.info("training on %s (%s)", requested, hw.device.name)
            return hw.device, hw.tier.value
        log.error("not training on %s: %s", requested, check.problem)
        self.ctx.emit(ErrorOccurred(message=f"the GPU ({hw.device.name}) is not used for training: "
                                            f"{check.problem}", fatal=False))
        cpu = dataclasses.replace(hw.device, device="cpu", memory_bytes=hw.device.system_memory_bytes, index=0)
        ms = await loop.run_in_executor(None, measure_ms_per_layer, "cpu")
        return cpu, tier_for_ms(ms).value

    def _wants_async(self) -> bool:
        """Async mode when the volunteer chose it over pipeline, or, left to the policy, on a T5
        machine (too slow for a live pipeline, modes.py). A lone node always trains the model."""
        return "async" in self.modes and "pipeline" not in self.modes

    def _staked_units(self) -> int:
        service = self.economy.service if self.economy is not None else None
        return service.ledger.balance(service.key.address).staked if service is not None else 0

    def _start_async(self, memory: int) -> None:
        assert self.net is not None and self.data is not None
        self.async_service = AsyncService(
            self.net, self.arch, self.training, self.data, emit=self.ctx.emit, activity=self.activity,
            proceed=self.ctx.control.proceed, stop_requested=lambda: self.ctx.control.stop_requested,
            memory_budget_bytes=memory, device=self.device)
        self.ctx.emit(LayersAssigned(first_layer=0, last_layer=self.arch.layers, roles=("async",),
                                     architecture_version=self.arch.version, total_layers=self.arch.layers,
                                     hidden=self.arch.hidden, parameters=self.arch.param_count()))

    def _on_vocabulary(self, _tokenizer: object) -> None:
        """Voted merges took effect: later stages are built at the new size, and the UI hears it."""
        assert self.vocab is not None
        self.arch = self.vocab.architecture(self.arch)
        self._emit_vocabulary()

    def _emit_vocabulary(self) -> None:
        assert self.vocab is not None
        tokenizer = self.vocab.tokenizer
        self.ctx.emit(VocabularyChanged(vocab_size=tokenizer.vocab_size, merges=len(tokenizer.merges),
                                        version=tokenizer.version,
                                        applied=tuple(s.proposal_id for s in self.vocab.history if s.applied)))

    def _proposals(self) -> list[Proposal]:
        """The governance proposals in this node's ledger (the vocabulary service reads them)."""
        service = self.economy.service if self.economy is not None else None
        return service.ledger.proposals() if service is not None else []

    def _resume_point(self) -> ResumePoint | None:
        try:
            point = read_resume_point(self.config.data_dir)
        except CheckpointsUnusable as exc:  # decided once the stage is built (_recover_lost_checkpoints)
            log.error("%s", exc)
            self._checkpoints_lost = exc
            return None
        except CheckpointError as exc:
            log.warning("ignoring unusable checkpoint: %s", exc)
            return None
        for aside in point.set_aside if point is not None else ():
            self.ctx.emit(CheckpointSetAside(original=str(aside.original), now_at=str(aside.now_at),
                                             reason=aside.reason, loaded=str(point.path)))
        if point is not None and self.vocab is not None and point.arch.vocab != self.arch.vocab \
                and self.vocab.rewind_to(point.arch.vocab):  # saved before the last activation
            self.arch = self.vocab.architecture(self.arch)
        if point is not None and point.arch.to_dict() != self.arch.to_dict():
            log.warning("checkpoint is for another architecture; starting fresh")
            return None
        return point

    async def _build_stage(self, a: Assignment, resume: ResumePoint | None) -> None:
        assert self.net is not None
        shard = build_shard(self.arch, a.layer_range, with_embedding=a.with_embedding, with_head=a.with_head,
                            seed=self.training.init_seed)
        self.stage = self._new_stage(shard)
        self.cohort = P2PCohort(self.net.node, holds=lambda: self.stage.layer_range if self.stage else (0, 0),
                                position=self._sync_position, on_idle_payload=self._on_idle_payload)
        self.sync = self._new_sync(self.stage)
        self.vocab.attach(self.stage, self.sync)
        if resume is not None:
            self.activity("resuming from checkpoint")
            restore_training_state(resume, self.stage, self.sync)
            if not self.net.solo:
                await self._catch_up(a.layer_range)
        elif a.download_from is not None:
            try:
                await self._download_into(self.stage, self.sync, a.layer_range, prefer=a.download_from)
            except RetryElsewhere as exc:  # no usable replica: genesis weights, as a lone holder would
                log.warning("could not take layers %s from a replica (%s); starting from their genesis weights",
                            a.layer_range, exc)
        self._serve_stage(self.stage)
        self.net.node.set_sync_handler(self.cohort.handle)
        self.net.node.set_weights_handler(weights_server(self._serve_weights))

    async def _recover_lost_checkpoints(self, lost: CheckpointsUnusable) -> None:
        """Neither checkpoint verifies: a live replica's weights, else the volunteer or the flag
        decides (checkpoint_recovery.py); a stop raises FaultStop out of start-up."""
        async def from_replica() -> str | None:
            if self.net is None or self.net.solo or self.stage is None or self.sync is None:
                return None
            try:
                await self._download_into(self.stage, self.sync, self.stage.layer_range)
            except RetryElsewhere:
                return None
            return f"holding layers {self.stage.layer_range}"

        await recover_unusable_checkpoints(
            lost, checkpoint_path(self.config.data_dir),
            policy=resolve_policy(self.config.on_corrupt_checkpoint, self.config.headless),
            emit=self.ctx.emit, decision=self.ctx.checkpoint_decision, from_replica=from_replica,
            stopped=lambda: self.ctx.control.sleep(float("inf")))

    def _sync_position(self) -> tuple[int, int]:
        return (self.sync.rounds, self.sync.replica.inner_steps_done) if self.sync else (0, 0)

    def _on_idle_payload(self, sender: str, layer_range: tuple[int, int]) -> None:
        """A replica synced while no driver routed to us: adopt its weights after its round, so an
        idle replica stays a usable failover target instead of keeping stale weights."""
        if self.stage is not None and _idle(self.stage) and (self._following is None or self._following.done()):
            self._following = asyncio.ensure_future(self._follow(sender, layer_range))

    async def _follow(self, sender: str | None, layer_range: tuple[int, int], delay_s: float = FOLLOW_DELAY_S) -> None:
        await asyncio.sleep(delay_s)
        stage, sync = self.stage, self.sync
        if stage is None or sync is None or stage.layer_range != layer_range or not _idle(stage):
            return
        try:
            weights = P2PWeights(self.net.node) if self.net else None
            state = await weights.fetch(layer_range, prefer=sender) if weights else None
        except RetryElsewhere:
            return
        if state is None or not _idle(stage):
            return
        stage.load_weights(state)
        sync.adopt_position(weights.last_position[0] if weights and weights.last_position else None)
        self.activity("idle replica: took the latest weights from a peer")

    def _new_stage(self, shard: ModelShard) -> StageWorker:
        first, last = shard.layer_range  # speed options for this device and memory (training/speed.py)
        speed = plan_speed(self.device, arch=self.arch, layers=last - first, with_embedding=shard.with_embedding,
                           with_head=shard.with_head, memory_budget_bytes=self._memory_budget,
                           tokens_in_flight=self.training.batch_size * min(self.training.seq_len, self.arch.max_seq))
        for reason in speed.reasons:
            log.info("stage %s-%s: %s", first, last - 1, reason)
        return StageWorker(shard, self.training, executor=self.ctx.executor, device=self.device, speed=speed,
                           on_commit=self._stage_committed, after_commit=self._stage_after_commit,
                           on_forward=self._stage_forward, vocab=self.vocab.guard())

    def _stage_forward(self, stage: StageWorker, driver: str, step: int, mb: int, inputs: list, output: Any) -> None:
        """PoNW keeps what this node's training proofs commit to (runtime/verification.py)."""
        if self.economy is not None and self.economy.service is not None:
            self.economy.service.steps.on_forward(stage, driver, step, mb, inputs, output)

    def _stage_committed(self, stage: StageWorker, info: CommitInfo) -> None:
        if self.trainer is not None:  # a peer may commit before our trainer exists: nothing to report yet
            self.trainer.record_commit(stage, info)

    async def _stage_after_commit(self, stage: StageWorker) -> None:
        if self.trainer is not None:
            await self.trainer.after_commit(stage)

    def _new_sync(self, stage: StageWorker) -> StageSync:
        assert self.net is not None and self.cohort is not None
        return StageSync(self.net.node_id, stage, self.cohort, self.training, on_report=self.vocab.round_closed,
                         on_start=lambda: self.activity("averaging"), fetch_peer_state=self._fetch_peer_state)

    async def _fetch_peer_state(self, layer_range: tuple[int, int], peer: str) -> tuple[dict, dict, int] | None:
        return await P2PWeights(self.net.node).fetch_diloco(layer_range, peer) if self.net else None

    async def _download_into(self, stage: StageWorker, sync: StageSync, layer_range: tuple[int, int],
                             prefer: str | None = None) -> None:
        """Weights and DiLoCo position of a live replica, so this node syncs in step with it."""
        assert self.net is not None
        self.activity("downloading layers")
        weights = P2PWeights(self.net.node)
        state = await weights.fetch(layer_range, prefer=prefer)
        peer_vocab = _vocab_rows(state)
        if peer_vocab is not None and self.vocab is not None and not self.vocab.reach_size(peer_vocab):
            # the replica trains another vocabulary than our ledger leads to: its embedding/head
            # would not even fit; start from our own weights and let the tags sort it out later
            raise RetryElsewhere(f"the replica of layers {layer_range} is on a {peer_vocab}-token vocabulary "
                                   "that this node's ledger does not lead to yet")
        stage.load_weights(state)
        sync.adopt_position(*(weights.last_position or (None, 0)))

    async def _catch_up(self, layer_range: tuple[int, int]) -> None:
        """Rejoining after a restart: the replicas kept training while we were down, so take their
        weights and DiLoCo round (our checkpoint keeps the optimizer state and counters)."""
        assert self.stage is not None and self.sync is not None
        try:
            await self._download_into(self.stage, self.sync, layer_range)
        except RetryElsewhere:
            log.info("no live replica of %s: continuing from our own checkpoint", layer_range)

    def _serve_stage(self, stage: StageWorker) -> None:
        assert self.net is not None
        self.net.node.set_stage_handler(stage_server(stage.handle, busy=self._busy,
                                                     first_layer=lambda: stage.layer_range[0]))

    def _busy(self) -> str | None:
        """Why this node serves no stage work right now: a volunteer's pause must stop the machine
        computing (the caller fails over to a replica or waits), as must a stage swap in progress."""
        if self.ctx.control.paused and not self.ctx.control.stop_requested:
            return "this node is paused by its volunteer"
        if self._swapping:
            return "this node is switching stages"
        return None

    async def _move(self, a: Assignment) -> None:
        """The pool moved this node to another stage (healing): finish, download, swap, announce.

        Idempotent: a move onto the stage this node already serves changes nothing (rebuilding it
        would throw its trained weights away for genesis ones)."""
        assert self.net is not None and self.trainer is not None
        async with self._move_lock:
            if self.stage is not None and _serves(self.stage, a):
                log.info("already serving layers %s: nothing to move", a.layer_range)
                return
            await self._move_to(a)

    async def _move_to(self, a: Assignment) -> None:
        assert self.net is not None and self.trainer is not None
        self.activity(f"moving to layers {a.layer_range[0]}-{a.layer_range[1] - 1}")
        await self.trainer.stop_driving()
        shard = build_shard(self.arch, a.layer_range, with_embedding=a.with_embedding, with_head=a.with_head,
                            seed=self.training.init_seed)
        stage = self._new_stage(shard)
        sync = self._new_sync(stage)
        self.vocab.attach(stage, sync)
        if a.download_from is not None:
            try:
                await self._download_into(stage, sync, a.layer_range, prefer=a.download_from)
            except RetryElsewhere:
                # The holder the pool named died too and no other live replica answers: the
                # stage's trained weights are gone, so serve it from its genesis weights rather
                # than leave the pipeline without the stage.
                log.warning("no live replica of layers %s: serving them from their genesis weights", a.layer_range)
        # The old stage served until now (a download takes a while); from here to the
        # announcement calls are refused as retryable, then the new stage answers.
        self._swapping = True
        try:
            self.stage, self.sync, self.driver, self.quorums = stage, sync, None, None
            self._serve_stage(stage)
            self.trainer.replace_stage(stage, sync)
            self.assignment = a
            await self._announce(*self._offer)
        finally:
            self._swapping = False
        self._emit_layers()

    async def _serve_weights(self, caller: bytes, meta: dict[str, Any]) -> dict[str, Any]:
        stage, sync = self.stage, self.sync
        assert stage is not None and sync is not None
        if list(meta.get("range", [])) != list(stage.layer_range):
            raise RetryElsewhere(f"this node holds layers {stage.layer_range}, not {meta.get('range')}")
        if meta.get("diloco") is True:  # a late cohort member rejoining our anchor
            state = await asyncio.get_running_loop().run_in_executor(self.ctx.executor, sync.replica.flat_state)
        else:
            state = await asyncio.get_running_loop().run_in_executor(self.ctx.executor, stage.state_for_transfer)
        state[SYNC_POSITION] = torch.tensor([sync.rounds, sync.replica.inner_steps_done], dtype=torch.float32)
        return state

    async def _announce(self, tier: str, layers_fit: int) -> None:
        assert self.net is not None and self.stage is not None
        if not self.net.node.address and not self.net.node.relay_address:
            # --no-listen with no relay yet (a solo genesis node has no peer to relay through):
            # nobody could dial the holder we would announce, so there is nothing to announce.
            log.info("not announcing layers: this node accepts no connections and has no relay")
            return
        first, last = self.stage.layer_range
        ttl = self.net.node.config.heartbeat_timeout_s
        await self.net.node.registry.announce(LayerAnnouncement(first, last, tier=tier,
                                                                capacity=float(layers_fit), ttl=ttl))

    def _emit_layers(self) -> None:
        assert self.stage is not None and self.assignment is not None
        first, last = self.stage.layer_range
        self.ctx.emit(LayersAssigned(first_layer=first, last_layer=last, roles=self.assignment.roles,
                                     architecture_version=self.arch.version, total_layers=self.arch.layers,
                                     hidden=self.arch.hidden, parameters=self.arch.param_count(),
                                     block_type=self.arch.block_type,
                                     memory_savers=self.stage.speed.memory_savers()))

    async def _build_trainer(self, resume: ResumePoint | None) -> None:
        assert self.net is not None and self.stage is not None and self.data is not None
        t = self.training
        transport = ArchTaggedTransport(self.vocab.transport(P2PStageTransport(self.net.node)), lambda: self.arch)
        if self.stage.is_first:
            starts = await self._stage_starts()
            self.driver = PipelineDriver(self.net.node_id, self.stage, starts, transport if starts else None,
                                         micro_batches=t.micro_batches, max_attempts=t.max_microbatch_attempts,
                                         proceed=self.ctx.control.proceed)
            self._drove = self.driver
            self.vocab.attach_loader(self.data.open_loader(t.batch_size, min(t.seq_len, self.arch.max_seq)))
            if resume is not None:
                self.data.restore_loader(resume.counters.get("loader") or {})
            self.quorums = QuorumService(self.net, self.driver, self.arch, t, self.ctx.emit)
            await self.quorums.form()
        self.trainer = NodeTrainer(
            self.net.node_id, self.stage, t, sync=self.sync, driver=self.driver,
            batches=self.data.next_batch if self.driver else None, proceed=self.ctx.control.proceed,
            data_dir=self.config.data_dir, loader_state=self.data.loader_state, on_activity=self.activity,
            on_step=self._on_step, live_drivers=self._live_drivers,
            after_step=self.quorums.tick if self.quorums else None,
            driver_step=resume.driver_step if resume else 0,
            checkpointed_at=self.stage.inner_step if resume else -1)
        if not self.net.solo:
            self.heal = HealService(self.net, self.arch, t, self._move,
                                    current=lambda: self.stage.layer_range if self.stage else (0, 0))
            self.heal.start()

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
            if self.mode_service is None:
                raise ValueError("the node is still starting; try again in a moment")
            # Switching between pipeline and async takes effect at the next start (layers move then).
            self.modes = await asyncio.get_running_loop().run_in_executor(None, self.mode_service.set,
                                                                          tuple(command.modes))
            return self.modes
        if self.economy is not None and self.economy.handles(command):
            return await self.economy.handle(command)
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
        if what == "reachability":
            node = self.net.node if self.net else None
            reachable = bool(node and not self.net.solo and node.tracker_client.reachable)
            return {"reachable": reachable, "relay": node.relay_address if node else ""}
        raise ValueError(f"unknown query {what!r}; ask for status, peers, layers or reachability")

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
            "bytes_sent": stats.get("sent", {}), "failovers": self._drove.failovers if self._drove else 0,
            "router_failovers": router, "replays": self._drove.replays if self._drove else 0,
            "sync_rounds": self.sync.rounds if self.sync else 0,
            "layer_hashes": self.stage.layer_hashes() if self.stage else {},
            "quorum": self.quorums.record() if self.quorums else None,
            "moves": self.heal.moves if self.heal else 0,
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


def _idle(stage: StageWorker) -> bool:
    """No driver has routed to this stage in this session (a spare replica): replacing its weights
    cannot break a forward graph in flight."""
    return not stage.seen_drivers and not stage.is_first


def _serves(stage: StageWorker, a: Assignment) -> bool:
    return (stage.layer_range == tuple(a.layer_range) and stage.is_first == a.with_embedding
            and stage.is_last == a.with_head)


def _vocab_rows(state: dict[str, torch.Tensor]) -> int | None:
    """Vocabulary size of downloaded weights (rows of the embedding or head), None without them."""
    for name in ("embedding.table.weight", "head.out.weight"):
        if name in state and state[name].dim() == 2:
            return int(state[name].shape[0])
    return None


def _assignment_from(point: ResumePoint, node_id: str) -> Assignment:
    return Assignment(node_id, -1, point.layer_range, point.with_embedding, point.with_head)
