"""The composition root: a node's parts, built and wired in start-up order (parts.py holds them).

1. ``open_base``: identity, network (not yet started), economy, vocabulary, the activity line
   and the step reports (the economy's Proof-of-Neural-Work is the first step sink).
2. ``measure_capacity``: the training device — the measured one once one real step there
   matched the CPU (training/device_check.py), else the CPU with an error event, its tier and
   memory re-derived for the CPU so the node advertises what it will actually do — its memory
   budget, the whole layers that fit, and the contribution modes (modes.py's policy).
3. ``assemble``: join the network, open the data, then the job: async snapshot training (a T5
   node that chose it) or a pipeline stage — resume point or layer plan, the StageHost, the
   driver and its quorum when the stage holds the embedding, the trainer, healing.

Each step returns a frozen object whose parts are all built; nothing is filled in later.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence

from app.node.config import listening
from app.node.data.loader import BatchLoader
from app.node.data.manifest import DataError
from app.node.events import CheckpointSetAside, ErrorOccurred, LayersAssigned
from app.node.hardware import layers_that_fit, measure_ms_per_layer, memory_budget_bytes, tier_for_ms
from app.node.migration import adopted_architecture, adopted_nodes
from app.node.migration import recover as recover_migration
from app.node.model.architecture import ModelArchitecture
from app.node.model.checkpoint import CheckpointError, CheckpointsUnusable
from app.node.runtime.async_service import AsyncService
from app.node.runtime.data_service import DataService
from app.node.runtime.economy_link import EconomyLink
from app.node.runtime.heal_service import HealService
from app.node.runtime.inference_market import InferenceMarket
from app.node.runtime.inference_service import Served
from app.node.runtime.mode_service import ModeService, free_disk_bytes
from app.node.runtime.network import NetworkService, load_identity
from app.node.runtime.p2p_transport import P2PStageTransport
from app.node.runtime.parts import AsyncJob, Capacity, NodeBase, NodeParts, PipelineJob
from app.node.runtime.planner import Planner
from app.node.runtime.quorum_service import QuorumService
from app.node.runtime.stage_host import StageHooks, StageHost
from app.node.runtime.status import Activity, StepReports, StepSink, emit_vocabulary
from app.node.runtime.takeover_service import TakeoverService
from app.node.runtime.upgrade_service import UpgradeService
from app.node.runtime.vocab_service import VocabService
from app.node.runtime_api import RuntimeContext
from app.node.training.arch_guard import ArchTaggedTransport
from app.node.training.async_mode import snapshot_fits
from app.node.training.checkpointing import ResumePoint, read_resume_point
from app.node.training.config import TrainingConfig
from app.node.training.device_check import check_training_device
from app.node.training.layer_pool import Assignment, NodeOffer
from app.node.training.pipeline import PipelineDriver
from app.node.training.stage import CommitInfo, StageWorker
from app.node.training.trainer import NodeTrainer

log = logging.getLogger("neuroshard.runtime")
STAGE_LOOKUP_S = 0.3


async def open_base(ctx: RuntimeContext, step_sinks: Sequence[StepSink] = ()) -> NodeBase:
    config = ctx.config
    training = TrainingConfig.from_dict(config.training)
    rolled_back = recover_migration(config.data_dir)  # a migration stopped midway: back on the old version
    if rolled_back:
        log.warning("%s", rolled_back)
        ctx.emit(ErrorOccurred(message=rolled_back, fatal=False))
    key = await asyncio.get_running_loop().run_in_executor(None, load_identity, config)
    host, p2p = listening(config)  # who the volunteer allows to connect (the wizard's question)
    net = NetworkService.open(key, host=host, port=config.port, trackers=config.trackers, listen=config.listen,
                              p2p=p2p, emit=ctx.emit, advertise_host=config.advertise_host or "",
                              tls_dir=config.data_dir / "tls", data_dir=config.data_dir, invites=config.invites)
    ctx.usage.subscribe(net.apply_caps)  # the volunteer's upload/download caps, live
    economy = EconomyLink(ctx, net, key)
    # voted merges took effect: later stages are built at the new size (NodeBase.architecture), the UI hears it
    vocab = VocabService(config.data_dir, economy.proposals, on_change=lambda _tok: emit_vocabulary(vocab, ctx.emit))
    emit_vocabulary(vocab, ctx.emit)
    vocab.start()
    arch = adopted_architecture(config.data_dir, training.architecture())  # the version it migrated to
    return NodeBase(ctx, training, arch, net, economy, vocab, Activity(ctx.emit),
                    StepReports(ctx.emit, (economy.on_work, *step_sinks)))


async def measure_capacity(base: NodeBase) -> Capacity:
    ctx, config = base.ctx, base.ctx.config
    hw = ctx.hardware
    info, tier, device = hw.device, hw.tier.value, "cpu"
    if hw.device.device != "cpu":
        loop = asyncio.get_running_loop()
        requested = hw.device.torch_device
        base.activity(f"checking that {requested} trains correctly")
        check = await loop.run_in_executor(None, check_training_device, requested)
        device = check.device
        if check.ok:
            log.info("training on %s (%s)", requested, hw.device.name)
        else:
            log.error("not training on %s: %s", requested, check.problem)
            ctx.emit(ErrorOccurred(message=f"the GPU ({hw.device.name}) is not used for training: "
                                           f"{check.problem}", fatal=False))
            info = dataclasses.replace(hw.device, device="cpu", memory_bytes=hw.device.system_memory_bytes, index=0)
            tier = tier_for_ms(await loop.run_in_executor(None, measure_ms_per_layer, "cpu")).value
    memory = memory_budget_bytes(info, config.limits.memory_fraction, config.limits.memory_bytes)
    arch = base.architecture()
    layers_fit = layers_that_fit(memory, arch.train_bytes_per_layer())
    modes = ModeService(tier=tier, layers_fit=layers_fit, fits_full_model=snapshot_fits(arch, memory),
                        data_dir_free=lambda: free_disk_bytes(str(config.data_dir)),
                        staked_units=base.economy.staked_units, emit=ctx.emit)
    modes.start(config.modes)
    return Capacity(device, tier, memory, layers_fit, modes)


async def assemble(base: NodeBase, capacity: Capacity) -> NodeParts:
    config, net = base.ctx.config, base.net
    base.activity("joining the network")
    # Async mode when the volunteer chose it over pipeline, or, left to the policy, on a T5 machine
    # (too slow for a live pipeline, modes.py); async nodes offer no layers, so planners skip them.
    wants_async = "async" in capacity.modes.active and "pipeline" not in capacity.modes.active
    await net.start(capacity.tier, 0 if wants_async else capacity.layers_fit, capacity.memory)
    base.economy.start(verify_arch=base.architecture if "verify" in capacity.modes.active else None)
    economy = base.economy.service
    data = DataService(config.data_dir, net.node_id, seed=config.seed, corpus_dir=base.training.corpus_dir,
                       genesis_public_key=base.training.genesis_public_key,
                       receipts=economy.receipts if economy is not None else None)
    await data.open()
    net.serve(data=data.serve)
    if data.store is not None and data.store.missing() and not net.solo:  # receipts for them: data_receipts.py
        base.activity("fetching genesis shards from data nodes")
        await data.fetch_until_complete(net.node, net.peers, base.ctx.control.sleep)
    if not net.solo and wants_async:  # a lone node always trains the model
        return NodeParts(base, capacity, data, _async_job(base, capacity, data))
    return NodeParts(base, capacity, data, await _pipeline_job(base, capacity, data))


def _async_job(base: NodeBase, capacity: Capacity, data: DataService) -> AsyncJob:
    ctx, arch = base.ctx, base.architecture()
    service = AsyncService(base.net, arch, base.training, data, emit=ctx.emit, activity=base.activity,
                           proceed=ctx.control.proceed, stop_requested=lambda: ctx.control.stop_requested,
                           memory_budget_bytes=capacity.memory, device=capacity.device)
    ctx.emit(LayersAssigned(first_layer=0, last_layer=arch.layers, roles=("async",), architecture_version=arch.version,
                            total_layers=arch.layers, hidden=arch.hidden, parameters=arch.param_count()))
    return AsyncJob(service)


HELD_OUT_SEED, HELD_OUT_BATCHES = 7_777_777, 2


def _held_out_batches(data: DataService, t: TrainingConfig, arch: ModelArchitecture) -> list:
    """Genesis windows for scoring DiLoCo contributions before merging (training/scoring.py): a
    fixed draw, the same on every node, with a seed of its own (the manifest reserves no shard, so
    these windows can also appear in training). None without the shards yet: no screening."""
    if data.store is None:
        return []
    try:
        loader = BatchLoader(data.store, data.store.manifest, batch_size=t.batch_size,
                             seq_len=min(t.seq_len, arch.max_seq), seed=HELD_OUT_SEED)
        return [loader.next_batch() for _ in range(HELD_OUT_BATCHES)]
    except DataError as exc:
        log.info("no held-out scoring of DiLoCo contributions yet: %s", exc)
        return []


async def _pipeline_job(base: NodeBase, capacity: Capacity, data: DataService) -> PipelineJob:
    ctx, net, t = base.ctx, base.net, base.training
    resume, lost = _resume_point(base)
    planner = Planner(net, base.architecture(), t, base.activity, version_nodes=adopted_nodes(ctx.config.data_dir))
    log.info("network up as %s; planning layers", net.node_id[:12])
    me = NodeOffer(net.node_id, capacity.layers_fit, capacity.memory, capacity.tier)
    assignment = _assignment_from(resume, net.node_id) if resume else await planner.assign(me)
    log.info("assigned layers %s; building the stage", assignment.layer_range)

    # The stage is served before the trainer exists (it is built from the stage): a peer's commit
    # that arrives meanwhile is applied but not reported, as nothing trains here yet.
    trainer: NodeTrainer | None = None

    def on_commit(stage: StageWorker, info: CommitInfo) -> None:
        if trainer is not None:
            trainer.record_commit(stage, info)

    async def after_commit(stage: StageWorker) -> None:
        if trainer is not None:
            await trainer.after_commit(stage)

    host = StageHost(ctx, net, base.vocab, t, base.activity, assignment, device=capacity.device,
                     offer=(capacity.tier, capacity.layers_fit),
                     hooks=StageHooks(on_commit, after_commit, base.economy.on_forward, base.economy.on_backward,
                                      base.economy.on_applied, base.economy.on_async_merged),
                     memory_budget=capacity.memory, base_arch=base.genesis_arch,
                     held_out=_held_out_batches(data, t, base.architecture()),
                     serves_inference=lambda: "inference" in capacity.modes.active,
                     market=_inference_market(base), on_served=_inference_proofs(base),
                     inference_limits=ctx.config.inference)
    await host.start(resume, lost)
    if host.stage.is_first:
        # This node drives. Its cohort may ask where it stands before its driver starts (it waits
        # for the other stages' holders first): its steps are coming, so a replica that started
        # first waits for its payload instead of closing the round alone and dropping its work.
        host.sync.note_own_steps(ctx.config.max_steps)
    never_migrated = base.architecture().version == t.architecture().version  # --upgrade-at forces v1 -> v2 only
    upgrades = UpgradeService(net, base.architecture(), ctx.config.data_dir, memory_budget=capacity.memory,
                              holding=lambda: (host.stage.layer_range, host.stage.is_first, host.stage.is_last),
                              emit=ctx.emit, interval_s=t.heal_interval_s,
                              force_at_step=t.upgrade_at_step if never_migrated else 0,
                              max_upgrade_factor=t.max_upgrade_factor,
                              on_fitting_upgrade=_migrate_now(ctx, t))
    if planner.upgrade is not None:
        await upgrades.publish(planner.upgrade)
    else:
        upgrades.announce_pending()
    driver, quorums, takeover = None, None, None
    if host.stage.is_first:
        arch = base.architecture()
        starts = await _stage_starts(base, host.stage.layer_range[1])
        if t.expected_nodes and (resume is None or not never_migrated):  # a devnet's start, or back from its migration
            await _wait_for_expected_holders(base, starts)
        transport = ArchTaggedTransport(base.vocab.transport(
            P2PStageTransport(net.node, attempts=t.max_microbatch_attempts)), base.architecture)
        driver = PipelineDriver(net.node_id, host.stage, starts, transport if starts else None,
                                micro_batches=t.micro_batches, proceed=ctx.control.proceed)
        base.vocab.attach_loader(data.open_loader(t.batch_size, min(t.seq_len, arch.max_seq)))
        if resume is not None:
            data.restore_loader(resume.counters.get("loader") or {})
        quorums = QuorumService(net, driver, arch, t, ctx.emit)
        await quorums.form()
        if not net.solo:  # a dead driver's planned steps are taken over by a live one
            takeover = TakeoverService(net, t, lambda state: data.open_stream(state, base.vocab.tokenizer),
                                       base.activity)
    trainer = NodeTrainer(
        net.node_id, host.stage, t, sync=host.sync, driver=driver, batches=data.next_batch if driver else None,
        proceed=ctx.control.proceed, data_dir=ctx.config.data_dir, loader_state=data.loader_state,
        on_activity=base.activity, on_step=base.reports.record, live_drivers=net.live_drivers,
        after_step=_after_driver_step(quorums, upgrades, lambda: trainer.driver_step if trainer else 0, me,
                                      stop=ctx.control.request_stop if ctx.config.migration.automatic else None),
        takeover=takeover, driver_step=resume.driver_step if resume else 0,
        checkpointed_at=host.stage.inner_step if resume else -1)
    heal = None
    networked = not net.solo or net.may_find_peers  # a lone node LAN discovery may still join to
    if networked:
        moving = trainer  # the healing pool moves this node; the trainer hands its stage over

        async def move(a: Assignment) -> None:
            await host.move(a, moving)

        heal = HealService(net, base.architecture(), t, move, current=lambda: host.stage.layer_range)
        heal.start()
        upgrades.start()
    return PipelineJob(host, trainer, driver, quorums, heal, upgrades if networked else None)


def _migrate_now(ctx: RuntimeContext, t: TrainingConfig) -> Callable[[], None] | None:
    """A headless server with ``[migration] automatic`` stops as soon as it hears of an upgrade
    that fits it (one kept in the data dir from an earlier run included), so it trains no further
    step on the old version and headless.py migrates it deterministically, not when its poll
    happens to look. A forced devnet upgrade stops its drivers after that step instead."""
    if not (ctx.config.headless and ctx.config.migration.automatic) or t.upgrade_at_step:
        return None
    return ctx.control.request_stop


def _after_driver_step(quorums: QuorumService | None, upgrades: UpgradeService, committed: Callable[[], int],
                       me: NodeOffer, *, stop: Callable[[], None] | None) -> Callable[[], Awaitable[None]]:
    """What a driver does after each committed step: the quorum's bookkeeping, then a forced
    architecture recalculation when the step is the devnet's ``--upgrade-at``; with automatic
    migration (``stop``) the driver ends its run right there, to migrate and come back."""
    async def after() -> None:
        if quorums is not None:
            await quorums.tick()
        await upgrades.after_driver_step(committed(), me)
        if stop is not None and upgrades.forced_upgrade_due(committed()):
            stop()

    return after


def _inference_market(base: NodeBase) -> InferenceMarket | None:
    """Quotes and payments for the sessions this node serves, on its ledger (none without one:
    rewards are off, so sessions are served for free)."""
    economy = base.economy.service
    if economy is None:
        return None
    hardware = base.ctx.hardware
    return InferenceMarket(economy.ledger, economy.config, economy.key.address,
                           ms_per_layer=lambda: hardware.ms_per_layer)


def _inference_proofs(base: NodeBase) -> Callable[[Served], None] | None:
    """Session steps served become the economy's inference proofs (tokens per layer held)."""
    economy = base.economy.service
    if economy is None:
        return None
    return lambda served: economy.on_inference(served.tokens, served.layers)


def _resume_point(base: NodeBase) -> tuple[ResumePoint | None, CheckpointsUnusable | None]:
    """The checkpoint to resume from, if usable; both copies failing verification is decided once
    the stage is built (StageHost.start: a replica's weights, or the volunteer's choice)."""
    try:
        point = read_resume_point(base.ctx.config.data_dir)
    except CheckpointsUnusable as exc:
        log.error("%s", exc)
        return None, exc
    except CheckpointError as exc:
        log.warning("ignoring unusable checkpoint: %s", exc)
        return None, None
    if point is None:
        return None, None
    for aside in point.set_aside:
        base.ctx.emit(CheckpointSetAside(original=str(aside.original), now_at=str(aside.now_at),
                                         reason=aside.reason, loaded=str(point.path)))
    if point.arch.vocab != base.architecture().vocab:
        base.vocab.rewind_to(point.arch.vocab)  # saved before the last activation: back to that prefix
    if point.arch.to_dict() != base.architecture().to_dict():
        log.warning("checkpoint is for another architecture; starting fresh")
        return None, None
    return point, None


async def _stage_starts(base: NodeBase, first_later: int) -> list[int]:
    """First layers of the later stages, from the announcements (the plan's bounds)."""
    arch, loop = base.architecture(), asyncio.get_running_loop()
    deadline = loop.time() + max(10.0, base.training.join_wait_s * 10)
    while True:
        # Walked afresh each time: while a network migrates, an old version's announcement (its
        # stage ends elsewhere) can lead the walk to a layer no stage of ours starts at.
        starts, layer = [], first_later
        while layer < arch.layers:
            holders = [r for r in await base.net.holders_from(layer) if r.layer_end <= arch.layers]
            if not holders:
                break
            starts.append(layer)
            layer = max(r.layer_end for r in holders)
        if layer >= arch.layers:
            return starts
        if loop.time() > deadline:
            raise RuntimeError(f"no node holds layer {layer}; the network cannot train yet")
        base.activity(f"waiting for a holder of layer {layer}")
        await asyncio.sleep(STAGE_LOOKUP_S)


async def _wait_for_expected_holders(base: NodeBase, starts: list[int]) -> None:
    """A driver in a network that expects ``expected_nodes`` (a devnet), at its start or back from a
    migration, waits up to the join window until that many nodes announce the stages it trains
    with: quorums are formed by rank over the holders each driver sees, so drivers that formed
    theirs while only the first replica was up would all route to it and leave the others idle,
    and a driver that trained ahead alone would close its first DiLoCo round without the replica
    that was still building its stage."""
    arch, loop, t = base.architecture(), asyncio.get_running_loop(), base.training
    ranges = list(zip([0, *starts], [*starts, arch.layers], strict=True))
    deadline = loop.time() + max(10.0, t.join_wait_s * 10)
    while loop.time() < deadline:
        seen = {base.net.node_id}
        for first, last in ranges:
            seen |= {r.node_id.hex() for r in await base.net.holders_from(first) if r.layer_end == last}
        if len(seen) >= t.expected_nodes:
            return
        base.activity(f"waiting for the stages' holders ({len(seen)} of {t.expected_nodes} nodes)")
        await asyncio.sleep(STAGE_LOOKUP_S)


def _assignment_from(point: ResumePoint, node_id: str) -> Assignment:
    return Assignment(node_id, -1, point.layer_range, point.with_embedding, point.with_head)

