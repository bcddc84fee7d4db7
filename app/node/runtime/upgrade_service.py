"""UpgradeService: publish and hear architecture upgrade records, and say what they mean here.

The node whose join makes the layer pool's recalculation fire signs the upgrade record with its
node key and stores it in the DHT under the new version (training/upgrade.py ``dht_key``). Every
pipeline node looks there each ``heal_interval_s``; the first record that verifies, is the
deterministic growth of this node's current architecture and carries the next version is kept in
the data dir (``migration.save_pending``, so ``main.py migrate`` and the app's dialog can read it
offline) and announced once as ``UpgradeAvailable`` with this computer's figures
(migration.node_impact). A record that fails to verify is logged and ignored.

``force_at_step`` (a devnet's ``--upgrade-at``, training.upgrade_at_step): a driver that has
committed that step recalculates the architecture from the offers in the registry right away,
instead of waiting for the 50th join, and publishes the upgrade when there is one. A node that
stops looks once more (``check`` from the runtime), so a worker whose drivers stopped to migrate
hears of the upgrade before it leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from app.node.events import Event, UpgradeAvailable
from app.node.migration import load_pending, node_impact, save_pending
from app.node.model.architecture import ModelArchitecture
from app.node.runtime.network import NetworkService
from app.node.runtime.planner import offer_of
from app.node.training.layer_pool import DynamicLayerPool, NodeOffer, UpgradeNotice
from app.node.training.upgrade import InvalidUpgrade, UpgradeRecord, dht_key, parse_upgrade, sign_upgrade

log = logging.getLogger("neuroshard.runtime.upgrade")
RECORD_TTL_S = 86400.0
"""An upgrade record stays in the DHT a day, the longest a DHT node stores a value (p2p/dht.py
refuses a longer TTL, so a week made every publish fail); every node that heard it also keeps it
in its data dir (``save_pending``) until it migrated."""


class UpgradeService:
    def __init__(self, net: NetworkService, arch: ModelArchitecture, data_dir: Path, *, memory_budget: int,
                 holding: Callable[[], tuple[tuple[int, int], bool, bool]], emit: Callable[[Event], None],
                 interval_s: float, force_at_step: int = 0, max_upgrade_factor: float = 0.0,
                 on_fitting_upgrade: Callable[[], None] | None = None) -> None:
        """``holding``: this node's layer range, whether it holds the embedding, the head.
        ``force_at_step``: recalculate once a driver committed this step (0: never forced);
        ``max_upgrade_factor``: the growth cap of that recalculation (training/upgrade.py);
        ``on_fitting_upgrade``: called once when an upgrade that fits this computer is announced
        (a server with automatic migration stops there, before another step on the old version)."""
        self.net, self.arch, self.data_dir = net, arch, data_dir
        self.memory_budget, self.holding, self.emit = memory_budget, holding, emit
        self.interval_s = interval_s
        self.force_at_step, self.max_upgrade_factor = force_at_step, max_upgrade_factor
        self.on_fitting_upgrade = on_fitting_upgrade
        self._forced = False
        self.announced: UpgradeRecord | None = None
        self._task: asyncio.Task[None] | None = None

    async def publish(self, notice: UpgradeNotice) -> UpgradeRecord:
        """Sign the pool's upgrade with our node key, store it in the DHT and announce it here."""
        record = sign_upgrade(self.net.node.key, notice.plan, notice.nodes)
        stored = await self.net.node.dht.store(dht_key(record.target.version), record.to_bytes(), ttl=RECORD_TTL_S)
        log.info("architecture version %d published (%d -> %d parameters, stored on %d peers)",
                 record.target.version, notice.current.param_count(), record.target.param_count(), stored)
        self._announce(record)
        return record

    async def after_driver_step(self, committed_steps: int, me: NodeOffer) -> UpgradeRecord | None:
        """Called after each committed driver step: at ``force_at_step`` recalculate the
        architecture over the registry's offers (``me`` included) and publish what it gives."""
        if not self.force_at_step or self._forced or committed_steps < self.force_at_step or self.announced:
            return None
        self._forced = True
        offers = {o.node_id: o for o in [me, *map(offer_of, await self.net.peers())] if o.layers_fit >= 1}
        pool = DynamicLayerPool(self.arch, max_upgrade_factor=self.max_upgrade_factor)
        pool.adopt([], {}, offers.values())
        notice = pool.check_upgrade(force=True)
        if notice is None:
            log.info("recalculation forced at step %d: no upgrade of at least 1.3x fits %d nodes",
                     committed_steps, len(offers))
            return None
        log.info("recalculation forced at step %d over %d nodes", committed_steps, len(offers))
        return await self.publish(notice)

    def forced_upgrade_due(self, committed_steps: int) -> bool:
        """A forced upgrade (``force_at_step``) is announced and this driver committed that step:
        with automatic migration it stops driving here, so every driver of the run migrates
        after exactly the same step and their DiLoCo rounds stay in step on the new version."""
        return bool(self.force_at_step) and self.announced is not None and committed_steps >= self.force_at_step

    def announce_pending(self) -> UpgradeRecord | None:
        """An upgrade kept in the data dir from an earlier run (not migrated yet): announce it again,
        so a restarted node (a server with ``[migration] automatic``, the app) hears of it."""
        try:
            record = load_pending(self.data_dir)
        except InvalidUpgrade as exc:
            log.warning("ignoring the upgrade kept in the data dir: %s", exc)
            return None
        if record is not None and record.plan.source.to_dict() == self.arch.to_dict():
            self._announce(record)
        return self.announced

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _loop(self) -> None:
        while self.announced is None:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # hearing of an upgrade is best effort; training goes on
                log.exception("upgrade check failed")
            await asyncio.sleep(self.interval_s)

    async def check(self) -> UpgradeRecord | None:
        """Look for the record of the next version in the DHT; announce the first valid one."""
        if self.announced is not None:
            return self.announced
        for raw in await self.net.node.dht.get(dht_key(self.arch.version + 1)):
            try:
                record = parse_upgrade(raw)
            except InvalidUpgrade as exc:
                log.warning("ignoring an upgrade record: %s", exc)
                continue
            if record.plan.source.to_dict() == self.arch.to_dict():
                self._announce(record)
                return record
        return None

    def _announce(self, record: UpgradeRecord) -> None:
        if self.announced is not None:
            return
        self.announced = record
        save_pending(self.data_dir, record)
        layer_range, with_embedding, with_head = self.holding()
        impact = node_impact(record.plan, layer_range, with_embedding=with_embedding, with_head=with_head,
                             memory_budget_bytes=self.memory_budget)
        self.emit(UpgradeAvailable(
            current_version=record.plan.source.version, candidate_version=record.target.version,
            current_parameters=record.plan.source.param_count(), candidate_parameters=record.target.param_count(),
            layers_held_after=impact.layers_after[1] - impact.layers_after[0],
            memory_needed_bytes=impact.memory_needed_bytes, memory_budget_bytes=self.memory_budget,
            fits_here=impact.fits))
        if impact.fits and self.on_fitting_upgrade is not None:
            self.on_fitting_upgrade()
