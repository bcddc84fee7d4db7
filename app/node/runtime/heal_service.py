"""HealService: keep MIN_REPLICAS holders per stage when holders stop heart-beating (seed 002).

Every ``heal_interval_s`` each pipeline node reads the live holders of every stage from the DHT
(a holder that stopped heart-beating drops out within its announcement's TTL), rebuilds the
DynamicLayerPool from them and asks it to heal. The pool is deterministic, so all nodes compute
the same moves and only the node a move names acts: it finishes its current step (a driver sends
``finish`` to its stages first), downloads the stage's weights and DiLoCo position from a live
replica, swaps its stage, and announces the new range. A stage nobody holds any more restarts
from the genesis weights of its layers (the trained ones are gone with their holders).

The view is each holder's newest announcement (a node that moved is not also counted on its old
stage), a move onto the stage this node already serves is never made, and the download source is
a holder whose announcement is still being refreshed (heart-beating), not one that merely has
not expired yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from app.node.model.architecture import ModelArchitecture
from app.node.p2p.records import PeerRecord
from app.node.runtime.network import NetworkService
from app.node.runtime.p2p_transport import heartbeat_fresh, peer_id
from app.node.runtime.planner import announced_holders, offer_of, tile
from app.node.training.config import TrainingConfig
from app.node.training.layer_pool import Assignment, DynamicLayerPool

log = logging.getLogger("neuroshard.runtime.heal")


class HealService:
    def __init__(self, net: NetworkService, arch: ModelArchitecture, config: TrainingConfig,
                 move: Callable[[Assignment], Awaitable[None]], current: Callable[[], tuple[int, int]]) -> None:
        self.net, self.arch, self.config = net, arch, config
        self.move, self.current = move, current
        self.moves = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heal_interval_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # healing is best effort; training goes on without it
                log.exception("heal check failed")

    async def check(self) -> Assignment | None:
        """One look at the holders; performs and returns this node's move, if it has one."""
        ranges = await announced_holders(self.net, self.arch)
        stages = tile(ranges, self.arch)
        if stages is None:
            return None
        bounds, holders = stages
        self.net.set_replicas(tuple(len(holders[i]) for i, (a, b) in enumerate(bounds) for _ in range(a, b)))
        me = self.net.node_id
        if self.current() not in bounds or me not in holders[bounds.index(self.current())]:
            return None  # our own announcement is not visible yet: decide nothing
        pool = DynamicLayerPool(self.arch, max_layers_per_node=self.config.max_layers_per_node)
        pool.bounds, pool.holders = bounds, {i: list(h) for i, h in holders.items()}
        pool.offers = {o.node_id: o for o in map(offer_of, await self.net.peers())}
        pool.offers[me] = offer_of(self.net.node.record()) if self.net.node.record() else pool.offers.get(me)
        pool.offers = {k: v for k, v in pool.offers.items() if v is not None and v.layers_fit >= 1}
        # Healing moves holders onto later stages only: a node moved onto stage 0 would have to
        # become a driver with its own data stream, which a restart does more simply.
        mine = [m for m in pool.heal() if m.node_id == me and m.stage > 0]
        if not mine or mine[0].layer_range == self.current():
            return None  # nothing to do, or the stage we already serve (a move is never repeated)
        move = replace(mine[0], download_from=self._source(ranges.get(mine[0].layer_range, []), mine[0]))
        log.info("healing: moving to layers %s (download from %s)", move.layer_range,
                 (move.download_from or "nobody: genesis weights")[:12])
        self.moves += 1
        await self.move(move)
        return move

    def _source(self, records: list[PeerRecord], move: Assignment) -> str | None:
        """A holder of the target stage that is still heart-beating (the pool's choice if it is).

        A holder that died stays announced for up to one TTL; downloading from it would fail (or
        hang until the download times out on a real network) while a live replica may exist."""
        interval = self.net.node.config.heartbeat_interval_s
        live = [peer_id(r) for r in records
                if peer_id(r) != self.net.node_id and heartbeat_fresh(r, interval)]
        return move.download_from if move.download_from in live else (live[0] if live else None)
