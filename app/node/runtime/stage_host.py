"""StageHost: this node's pipeline stage and everything that replaces or feeds it.

It builds the stage (its StageWorker, StageSync and the vocabulary's guard), fills it (a
checkpoint, a live replica's weights and DiLoCo position, or the genesis weights), serves it
(stage calls, the DiLoCo exchange, weight transfer) and announces it. While no driver routes to
it (an idle replica) it follows its cohort's weights; when the pool moves the node (healing) it
builds the new stage, downloads it, swaps it in and announces it; a restarted node catches up
with the replicas that trained on without it.

The commit hooks a stage is built with come from the composition root (assembly.py): they reach
the trainer, which is built after the first stage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from app.node.checkpoint_recovery import recover_unusable_checkpoints
from app.node.events import LayersAssigned
from app.node.faults import resolve_policy
from app.node.inference_limits import InferenceLimits
from app.node.model.architecture import ModelArchitecture
from app.node.model.checkpoint import CheckpointsUnusable
from app.node.model.shard import lm_loss
from app.node.runtime.inference_market import InferenceMarket
from app.node.runtime.inference_service import InferenceService, Served
from app.node.runtime.network import NetworkService
from app.node.runtime.p2p_transport import (
    SYNC_POSITION,
    P2PCohort,
    P2PWeights,
    stage_server,
    weights_server,
)
from app.node.runtime.quorum_service import quorum_key
from app.node.runtime.vocab_service import VocabService
from app.node.runtime_api import RuntimeContext
from app.node.training.arch_guard import ARCH_KEY, arch_tag
from app.node.training.checkpointing import ResumePoint, checkpoint_path, restore_training_state
from app.node.training.config import TrainingConfig
from app.node.training.layer_pool import Assignment
from app.node.training.quorum import Quorum, QuorumError
from app.node.training.scoring import whole_model_loss
from app.node.training.speed import plan_speed
from app.node.training.stage import (
    AppliedHook,
    BackwardHook,
    CommitInfo,
    ForwardHook,
    StageWorker,
    build_shard,
)
from app.node.training.sync import StageSync, SyncReport
from app.node.training.trainer import NodeTrainer
from app.node.training.transport import RetryElsewhere

log = logging.getLogger("neuroshard.runtime")

FOLLOW_DELAY_S = 2.0
"""An idle replica waits this long after a peer's payload before copying the peer's weights, so the
peer has applied the round's outer step (its own wait is bounded by sync_timeout_s)."""


def _no_report(_stage: StageWorker, _info: CommitInfo) -> None:
    return None


def _forget_forward(*_args: Any) -> None:
    return None


async def _nothing_after(_stage: StageWorker) -> None:
    return None


@dataclass(frozen=True)
class StageHooks:
    """What every stage this host builds is given: where its commits go (stage.py's hooks)."""

    on_commit: Callable[[StageWorker, CommitInfo], None] = _no_report
    after_commit: Callable[[StageWorker], Awaitable[None]] = _nothing_after
    on_forward: ForwardHook = _forget_forward  # PoNW's step log (runtime/verification.py)
    on_backward: BackwardHook = _forget_forward
    on_applied: AppliedHook = _forget_forward
    on_async_merged: Callable[[tuple[int, int], tuple[tuple[str, int], ...]], None] | None = None
    """An outer step merged these async contributions ((node id, batches)) into this layer range:
    the holder's receipts for them (runtime/economy_link.py)."""


class StageHost:
    def __init__(self, ctx: RuntimeContext, net: NetworkService, vocab: VocabService, training: TrainingConfig,
                 activity: Callable[[str], None], assignment: Assignment, *, device: str, offer: tuple[str, int],
                 hooks: StageHooks, memory_budget: int | None = None,
                 base_arch: ModelArchitecture | None = None,
                 held_out: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
                 serves_inference: Callable[[], bool] = lambda: True,
                 market: InferenceMarket | None = None,
                 on_served: Callable[[Served], None] | None = None,
                 inference_limits: InferenceLimits | None = None) -> None:
        """Build the stage of ``assignment`` (genesis weights; ``start`` fills and serves it).
        ``memory_budget``: bytes the model may take here (the speed plan's memory savers).
        ``base_arch``: the architecture before the vocabulary (the configured one, or the version
        this node migrated to: migration.adopted_architecture).
        ``held_out``: genesis batches nobody trains on; a stage holding the whole model scores each
        DiLoCo contribution on them before merging (training/scoring.py).
        ``serves_inference()``: whether the volunteer's inference mode is on (sessions are refused
        as busy while it is off, so clients take another holder); ``market``: its quotes and
        payments (runtime/inference_market.py; None serves for free); ``on_served``: each session
        step served (the economy's inference proofs); ``inference_limits``: the ``[inference]``
        settings (sessions, cache memory, expiry, compute share)."""
        self._ctx, self._net, self._vocab, self._training, self._activity = ctx, net, vocab, training, activity
        self._genesis_arch = base_arch or training.architecture()
        self._device, self._hooks, self._memory_budget = device, hooks, memory_budget
        self._held_out = list(held_out)
        self.offer = offer  # (tier, whole layers that fit): what the announcements advertise
        self._following: asyncio.Future[None] | None = None
        self._follow_next: tuple[str, tuple[int, int]] | None = None  # a payload that came during a follow
        self._move_lock = asyncio.Lock()
        self._swapping = False  # between replacing the stage and announcing it (see _busy)
        self.moved = False
        self.cohort = P2PCohort(self._net.node, holds=lambda: self.stage.layer_range, position=self._sync_position,
                                on_idle_payload=self._on_idle_payload,
                                round_length=lambda: self._training.inner_steps,
                                arch=lambda: arch_tag(self.architecture()),
                                training=lambda round_: self.sync.will_send_for(round_))
        self.assignment = assignment
        self.stage, self.sync = self._build(assignment)
        # the key/value caches of inference sessions through this stage (runtime/inference_service.py)
        self.inference = InferenceService(lambda: self.stage, serving=lambda: serves_inference() and not self._busy(),
                                          limits=inference_limits or InferenceLimits(), market=market,
                                          on_served=on_served)

    def _build(self, a: Assignment) -> tuple[StageWorker, StageSync]:
        arch, t = self.architecture(), self._training
        shard = build_shard(arch, a.layer_range, with_embedding=a.with_embedding, with_head=a.with_head,
                            seed=t.init_seed)
        first, last = a.layer_range  # speed options for this device and memory (training/speed.py)
        speed = plan_speed(self._device, arch=arch, layers=last - first, with_embedding=a.with_embedding,
                           with_head=a.with_head, memory_budget_bytes=self._memory_budget,
                           tokens_in_flight=t.batch_size * min(t.seq_len, arch.max_seq))
        for reason in speed.reasons:
            log.info("stage %s-%s: %s", first, last - 1, reason)
        stage = StageWorker(shard, t, executor=self._ctx.executor, device=self._device, speed=speed,
                            on_commit=self._hooks.on_commit, after_commit=self._hooks.after_commit,
                            on_forward=self._hooks.on_forward, on_backward=self._hooks.on_backward,
                            on_applied=self._hooks.on_applied, vocab=self._vocab.guard())
        whole = a.with_embedding and a.with_head and self._held_out
        held_out = whole_model_loss(lambda: stage.shard, self._held_out, lm_loss) if whole else None
        sync = StageSync(self._net.node_id, stage, self.cohort, self._training, on_report=self._round_closed,
                         on_start=lambda: self._activity("averaging"), fetch_peer_state=self._fetch_peer_state,
                         held_out=held_out)
        self._vocab.attach(stage, sync)
        return stage, sync

    def _round_closed(self, sync: StageSync, report: SyncReport) -> None:
        self._vocab.round_closed(sync, report)
        if report.merged_async and self._hooks.on_async_merged is not None:
            self._hooks.on_async_merged(sync.stage.layer_range, report.merged_async)

    def architecture(self) -> ModelArchitecture:
        """The model the stages are built for now: the configured one at the voted vocabulary."""
        return self._vocab.architecture(self._genesis_arch)

    # --- start ---------------------------------------------------------------------------------
    async def start(self, resume: ResumePoint | None, lost: CheckpointsUnusable | None) -> None:
        """Fill the stage (checkpoint, replica or genesis), serve it and announce it."""
        a = self.assignment
        if resume is not None:
            self._activity("resuming from checkpoint")
            restore_training_state(resume, self.stage, self.sync)
            if not self._net.solo:
                await self._catch_up(a.layer_range)
        elif a.download_from is not None:
            try:
                await self._download_into(self.stage, self.sync, a.layer_range, prefer=a.download_from)
            except RetryElsewhere as exc:  # no usable replica: genesis weights, as a lone holder would
                log.warning("could not take layers %s from a replica (%s); starting from their genesis weights",
                            a.layer_range, exc)
        self._serve_stage(self.stage)
        self._net.serve(sync=self.cohort.handle, weights=weights_server(self._serve_weights),
                        inference=self.inference.handle)
        if lost is not None:
            await self._recover_lost_checkpoints(lost)
        await self._announce()
        log.info("layers announced")
        self._emit_layers()

    async def _recover_lost_checkpoints(self, lost: CheckpointsUnusable) -> None:
        """Neither checkpoint verifies: a live replica's weights, else the volunteer or the flag
        decides (checkpoint_recovery.py); a stop raises FaultStop out of start-up."""
        async def from_replica() -> str | None:
            if self._net.solo:
                return None
            try:
                await self._download_into(self.stage, self.sync, self.stage.layer_range)
            except RetryElsewhere:
                return None
            return f"holding layers {self.stage.layer_range}"

        config = self._ctx.config
        await recover_unusable_checkpoints(
            lost, checkpoint_path(config.data_dir), policy=resolve_policy(config.on_corrupt_checkpoint, config.headless),
            emit=self._ctx.emit, decision=self._ctx.checkpoint_decision, from_replica=from_replica,
            stopped=lambda: self._ctx.control.sleep(float("inf")))

    async def _catch_up(self, layer_range: tuple[int, int]) -> None:
        """Rejoining after a restart: the replicas kept training while we were down, so take their
        weights and DiLoCo round (our checkpoint keeps the optimizer state and counters)."""
        try:
            await self._download_into(self.stage, self.sync, layer_range)
        except RetryElsewhere:
            log.info("no live replica of %s: continuing from our own checkpoint", layer_range)

    async def _download_into(self, stage: StageWorker, sync: StageSync, layer_range: tuple[int, int],
                             prefer: str | None = None) -> None:
        """Weights and DiLoCo position of a live replica, so this node syncs in step with it."""
        self._activity("downloading layers")
        weights = P2PWeights(self._net.node, arch=arch_tag(self.architecture()))
        state = await weights.fetch(layer_range, prefer=prefer)
        peer_vocab = _vocab_rows(state)
        if peer_vocab is not None and not self._vocab.reach_size(peer_vocab):
            # the replica trains another vocabulary than our ledger leads to: its embedding/head
            # would not even fit; start from our own weights and let the tags sort it out later
            raise RetryElsewhere(f"the replica of layers {layer_range} is on a {peer_vocab}-token vocabulary "
                                 "that this node's ledger does not lead to yet")
        stage.load_weights(state)
        sync.adopt_position(*(weights.last_position or (None, 0)))

    async def _fetch_peer_state(self, layer_range: tuple[int, int], peer: str) -> tuple[dict, dict, int] | None:
        return await P2PWeights(self._net.node, arch=arch_tag(self.architecture())).fetch_diloco(layer_range, peer)

    # --- serving -------------------------------------------------------------------------------
    def _serve_stage(self, stage: StageWorker) -> None:
        self._net.serve(stage=stage_server(stage.handle, busy=self._busy, first_layer=lambda: stage.layer_range[0]))

    def _busy(self) -> str | None:
        """Why this node serves no stage work right now: a volunteer's pause must stop the machine
        computing (the caller fails over to a replica or waits), as must a stage swap in progress."""
        if self._ctx.control.paused and not self._ctx.control.stop_requested:
            return "this node is paused by its volunteer"
        if self._swapping:
            return "this node is switching stages"
        return None

    async def _serve_weights(self, caller: bytes, meta: dict[str, Any]) -> dict[str, Any]:
        stage, sync = self.stage, self.sync
        if list(meta.get("range", [])) != list(stage.layer_range):
            raise RetryElsewhere(f"this node holds layers {stage.layer_range}, not {meta.get('range')}")
        mine, theirs = arch_tag(self.architecture()), str(meta.get(ARCH_KEY) or "")
        if theirs and theirs != mine:  # untagged: an inference client taking whatever is held
            raise RetryElsewhere(f"this node holds layers {stage.layer_range} of architecture {mine}, "
                                 f"not {theirs[:60]}; versions never mix")
        loop = asyncio.get_running_loop()
        if meta.get("diloco") is True:  # a late cohort member rejoining our anchor
            state = await loop.run_in_executor(self._ctx.executor, sync.replica.flat_state)
        else:
            state = await loop.run_in_executor(self._ctx.executor, stage.state_for_transfer)
        state[SYNC_POSITION] = torch.tensor([sync.rounds, sync.replica.inner_steps_done], dtype=torch.float32)
        return state

    def _sync_position(self) -> tuple[int, int]:
        return self.sync.rounds, self.sync.replica.inner_steps_done

    async def _announce(self) -> None:
        tier, layers_fit = self.offer
        await self._net.announce(self.stage.layer_range, tier=tier, layers_fit=layers_fit)

    def _emit_layers(self) -> None:
        first, last = self.stage.layer_range
        arch = self.architecture()
        self._ctx.emit(LayersAssigned(first_layer=first, last_layer=last, roles=self.assignment.roles,
                                      architecture_version=arch.version, total_layers=arch.layers,
                                      hidden=arch.hidden, parameters=arch.param_count(),
                                      block_type=arch.block_type, memory_savers=self.stage.speed.memory_savers()))

    # --- an idle replica follows its cohort ---------------------------------------------------------
    def _on_idle_payload(self, sender: str, layer_range: tuple[int, int]) -> None:
        """A replica synced while no driver routed to us: adopt its weights after its round, so an
        idle replica stays a usable failover target instead of keeping stale weights."""
        if not _idle(self.stage):
            return
        if self._following is None or self._following.done():
            self._following = asyncio.ensure_future(self._follow_latest(sender, layer_range))
        else:  # a follow is under way: take this later round too once it is done (the last one counts)
            self._follow_next = (sender, layer_range)

    async def _follow_latest(self, sender: str | None, layer_range: tuple[int, int]) -> None:
        while True:
            await self._follow(sender, layer_range)
            if self._follow_next is None:
                return
            (sender, layer_range), self._follow_next = self._follow_next, None

    async def _follow(self, sender: str | None, layer_range: tuple[int, int], delay_s: float = FOLLOW_DELAY_S,
                      *, final: bool = False) -> bool:
        """Copy a peer's weights and DiLoCo round; ``final``: the run is over and this holder's own
        work is void (idle, or every driver it served died), so it replaces even trained weights."""
        await asyncio.sleep(delay_s)
        stage, sync = self.stage, self.sync
        if stage.layer_range != layer_range or not (final or _idle(stage)):
            return False
        weights = P2PWeights(self._net.node, arch=arch_tag(self.architecture()))
        try:
            state = await weights.fetch(layer_range, prefer=sender)
        except RetryElsewhere as exc:
            log.info("could not take a replica's weights of layers %s: %s", layer_range, exc)
            return False
        if not (final or _idle(stage)):
            return False
        stage.load_weights(state)
        sync.adopt_position(weights.last_position[0] if weights.last_position else None)
        self._activity("idle replica: took the latest weights from a peer")
        return True

    async def finish(self) -> bool:
        """The run is over: a holder that is behind its cohort (a member closed a later DiLoCo
        round than it did), or a replica whose work no surviving driver carries on (it was idle,
        or every driver it served died), ends on the weights of the member that trained on (or
        served a driver to its finish), so the copies of a stage agree and it leaves a usable copy
        behind. True if it took them."""
        stage = self.stage
        if self._net.solo:
            return False
        latest = self.cohort.latest_round(stage.layer_range)
        if latest is not None and latest[0] >= self.sync.rounds:
            # a member closed a round we never did (it trained on after our last step, e.g. a
            # driver that took a dead one's steps over, or its validator): its weights are newer
            return await self._follow(latest[1], stage.layer_range, delay_s=0.0, final=True)
        if stage.is_first or stage.seen_drivers & stage.finished_drivers:
            return False  # (the last: a driver we served said finish, so these are its final weights)
        try:
            live = await self._net.live_drivers()
        except Exception as exc:  # the registry did not answer: keep our own weights
            log.info("no end-of-run follow: %s", exc)
            return False
        if stage.seen_drivers & (live | stage.finished_drivers):
            return False  # a driver that finished (or still runs) trained these weights
        prefer = await finishing_member(self._net, stage.finished_drivers, stage.layer_range)
        return await self._follow(prefer, stage.layer_range, delay_s=0.0, final=True)

    # --- moving (healing) ----------------------------------------------------------------------------
    async def move(self, a: Assignment, trainer: NodeTrainer) -> None:
        """The pool moved this node to another stage (healing): finish, download, swap, announce.

        Idempotent: a move onto the stage this node already serves changes nothing (rebuilding it
        would throw its trained weights away for genesis ones)."""
        async with self._move_lock:
            if _serves(self.stage, a):
                log.info("already serving layers %s: nothing to move", a.layer_range)
                return
            await self._move_to(a, trainer)

    async def _move_to(self, a: Assignment, trainer: NodeTrainer) -> None:
        self._activity(f"moving to layers {a.layer_range[0]}-{a.layer_range[1] - 1}")
        await trainer.stop_driving()
        stage, sync = self._build(a)
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
            self.stage, self.sync, self.moved = stage, sync, True
            self._serve_stage(stage)
            trainer.replace_stage(stage, sync)
            self.assignment = a
            await self._announce()
        finally:
            self._swapping = False
        self._emit_layers()


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


async def finishing_member(net: NetworkService, finished: set[str], layer_range: tuple[int, int]) -> str | None:
    """A holder of ``layer_range`` that a finished driver's quorum names (its signed DHT record):
    it served that driver to the end, so its weights are the stage's final ones."""
    me = net.node_id
    for driver in sorted(finished):
        try:
            values = await net.node.dht.get_values(quorum_key(driver))
        except Exception:  # the record is advisory: fall back to any live holder
            continue
        for value in values:
            if value.publisher.hex() != driver:
                continue  # only the driver itself says who its quorum is
            try:
                quorum = Quorum.from_record(json.loads(value.value))
            except (QuorumError, ValueError):
                continue
            for member in quorum.members.values():
                if member != me and member != driver and await _holds(net, member, layer_range):
                    return member
    return None


async def _holds(net: NetworkService, node: str, layer_range: tuple[int, int]) -> bool:
    records = await net.node.who_holds(layer_range[0])
    return any(r.node_id.hex() == node and (r.layer_start, r.layer_end) == tuple(layer_range) for r in records)
