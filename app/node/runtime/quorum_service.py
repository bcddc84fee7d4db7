"""QuorumService: a driver's quorum — formed from the stage holders, kept in the DHT, healed.

The driver picks one holder per later stage of its speed class (training/quorum.py) and pins its
pipeline routes to them; when the transport fails over to a replica, the quorum takes that
replica as the stage's member; at the end of a session it renews (every member still announced)
or dissolves and forms again. Each change is stored in the DHT under ``quorum/<driver>`` and
published as a QuorumChanged event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable

from app.node.events import Event, QuorumChanged
from app.node.model.architecture import ModelArchitecture
from app.node.runtime.network import NetworkService
from app.node.training.config import TrainingConfig
from app.node.training.pipeline import PipelineDriver
from app.node.training.quorum import Quorum, QuorumState, form_quorum

log = logging.getLogger("neuroshard.runtime.quorum")


def quorum_key(driver: str) -> bytes:
    return hashlib.sha256(f"quorum/{driver}".encode()).digest()


class QuorumService:
    def __init__(self, net: NetworkService, driver: PipelineDriver, arch: ModelArchitecture,
                 config: TrainingConfig, emit: Callable[[Event], None]) -> None:
        self.net, self.driver, self.arch, self.config, self.emit = net, driver, arch, config, emit
        self.quorum: Quorum | None = None

    async def _holders(self) -> tuple[dict[int, list[str]], dict[str, str]]:
        drivers = [r.node_id.hex() for r in await self.net.node.who_holds(0) if r.layer_start == 0]
        stages: dict[int, list[str]] = {0: sorted(set(drivers) | {self.driver.driver_id})}
        tiers: dict[str, str] = {self.driver.driver_id: self.net.node.offer.get("tier") or "T3"}
        for index, start in enumerate(self.driver.stage_starts, start=1):
            records = [r for r in await self.net.node.who_holds(start) if r.layer_start == start]
            stages[index] = sorted(r.node_id.hex() for r in records)
            tiers.update((r.node_id.hex(), r.tier or "T3") for r in records)
        return stages, tiers

    async def form(self) -> Quorum | None:
        stages, tiers = await self._holders()
        self.quorum = form_quorum(self.driver.driver_id, stages, tiers, now=time.time(),
                                  session_s=self.config.quorum_session_s)
        if self.quorum is None:
            return None
        for index, start in enumerate(self.driver.stage_starts, start=1):
            self.driver.routes[start] = self.quorum.members[index]
        await self._publish()
        return self.quorum

    async def tick(self) -> None:
        """After a step: follow failovers and session ends."""
        q = self.quorum
        if q is None or q.state == QuorumState.DISSOLVED:
            await self.form()
            return
        changed = False
        for index, start in enumerate(self.driver.stage_starts, start=1):
            routed = self.driver.routes.get(start)
            if routed is not None and routed != q.members.get(index):
                q.replace_member(index, [routed])
                changed = True
        if q.session_over(time.time()):
            stages, _ = await self._holders()
            alive = {n for holders in stages.values() for n in holders}
            q.renew(time.time(), alive=lambda n: n in alive)
            changed = True
            if q.state == QuorumState.DISSOLVED:
                await self._publish()
                await self.form()
                return
        if changed:
            await self._publish()

    def record(self) -> dict | None:
        return self.quorum.to_record() if self.quorum else None

    async def _publish(self) -> None:
        q = self.quorum
        if q is None:
            return
        self.emit(QuorumChanged(quorum_id=q.quorum_id, state=q.state.value,
                                members=tuple(q.members[i] for i in sorted(q.members)), speed_class=q.speed))
        try:
            await self.net.node.dht.store(quorum_key(q.driver), json.dumps(q.to_record()).encode(),
                                          ttl=q.session_s * 2)
        except Exception as exc:  # the DHT record is advisory; training goes on without it
            log.info("could not store the quorum record: %s", exc)
