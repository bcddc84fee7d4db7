"""Where this node fits: its layer assignment, decided from what the network shows.

* No tracker answered: a solo genesis network, the whole model on this node.
* Stages are already announced in the DHT: join the least-replicated stage that fits
  (DynamicLayerPool.join), downloading its weights from a live holder.
* Nothing announced yet (nodes starting together, e.g. a devnet): wait until the expected number
  of nodes is visible (or the join window ends), then every node runs the same deterministic
  ``DynamicLayerPool.plan`` over the same offers and takes its own row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from app.node.model.architecture import ModelArchitecture
from app.node.p2p.records import PeerRecord
from app.node.runtime.network import NetworkService
from app.node.training.config import TrainingConfig
from app.node.training.layer_pool import Assignment, DynamicLayerPool, NodeOffer, PoolError, UpgradeNotice

log = logging.getLogger("neuroshard.runtime.planner")

EXPECTED_NODES_TIMEOUT_FACTOR = 10
"""A devnet waits up to ``join_wait_s`` × this for all its nodes before planning with fewer."""


def offer_of(record: PeerRecord) -> NodeOffer:
    return NodeOffer(record.node_id.hex(), int(record.capacity), record.memory, tier=record.tier or "T3")


class Planner:
    def __init__(self, net: NetworkService, arch: ModelArchitecture, config: TrainingConfig,
                 on_activity: Callable[[str], None], *, version_nodes: int = 1) -> None:
        """``version_nodes``: the node count at which ``arch`` was decided (1 for genesis, else
        the count in its upgrade record), from which recalculations are counted."""
        self.net, self.arch, self.config = net, arch, config
        self.on_activity = on_activity
        self.version_nodes = version_nodes
        self.pool = DynamicLayerPool(arch, max_layers_per_node=config.max_layers_per_node,
                                     recalc_interval=config.recalc_interval_nodes,
                                     max_upgrade_factor=config.max_upgrade_factor)
        self.upgrade: UpgradeNotice | None = None

    async def assign(self, me: NodeOffer) -> Assignment:
        if self.net.solo:
            return self.pool.plan([me])[0]
        peers = await self._wait_for_peers()
        existing = await self._announced_stages()
        if existing is not None:
            bounds, holders = existing
            self.pool.adopt(bounds, holders, map(offer_of, peers), version_nodes=self.version_nodes)
            planned = _row_of_shared_plan(self.arch, self.config, me, peers, bounds, holders)
            if planned is not None:
                self.pool.note_join(me)
                self.upgrade = self.pool.check_upgrade()
                return planned
            joined = self.pool.join(me)
            if joined is not None:
                self.upgrade = self.pool.check_upgrade()
                return joined
            log.warning("no announced stage fits this node; planning afresh")
        offers = [me, *map(offer_of, peers)]
        plan = self.pool.plan(offers)
        mine = [a for a in plan if a.node_id == me.node_id]
        if not mine:
            raise RuntimeError("this node fits no stage of the model; allow more memory for it")
        return mine[0]

    async def _wait_for_peers(self) -> list[PeerRecord]:
        loop = asyncio.get_running_loop()
        expected = self.config.expected_nodes
        wait = self.config.join_wait_s * (EXPECTED_NODES_TIMEOUT_FACTOR if expected else 1)
        deadline = loop.time() + wait
        peers = await self._pipeline_peers()
        while loop.time() < deadline:
            if expected and len(peers) + 1 >= expected:
                break
            self.on_activity(f"waiting for peers ({len(peers) + 1} of {expected or '?'} nodes)")
            await asyncio.sleep(0.3)
            peers = await self._pipeline_peers()
        return sorted(peers, key=lambda r: r.node_id)

    async def _pipeline_peers(self) -> list[PeerRecord]:
        """Peers that offer layers (async-mode nodes advertise a capacity of 0)."""
        return [r for r in await self.net.peers() if r.capacity >= 1]

    async def _announced_stages(self) -> tuple[list[tuple[int, int]], dict[int, list[str]]] | None:
        return await announced_stages(self.net, self.arch)


def _row_of_shared_plan(arch: ModelArchitecture, config: TrainingConfig, me: NodeOffer, peers: list[PeerRecord],
                        bounds: list[tuple[int, int]], holders: dict[int, list[str]]) -> Assignment | None:
    """Our row of the deterministic plan, if every announced holder sits where that plan put it.

    Nodes that start together plan independently; the slower ones already see the faster ones'
    announcements. Joining then would send every late node to the least-replicated stage at that
    instant (the same one for all of them: three drivers and one lone validator out of four
    nodes), while the faster nodes followed the plan. When the announcements agree with the plan,
    the plan is what this start-up is following, so take our row of it.
    """
    pool = DynamicLayerPool(arch, max_layers_per_node=config.max_layers_per_node)
    try:
        plan = pool.plan([me, *map(offer_of, peers)])
    except PoolError:
        return None
    if pool.bounds != bounds:
        return None
    stage_of = {a.node_id: a.stage for a in plan}
    if any(stage_of.get(node) != stage for stage, ids in holders.items() for node in ids):
        return None
    mine = [a for a in plan if a.node_id == me.node_id]
    if not mine:
        return None
    source = next((n for n in holders.get(mine[0].stage, []) if n != me.node_id), None)
    return replace(mine[0], download_from=source)


async def announced_holders(net: NetworkService, arch: ModelArchitecture) -> dict[tuple[int, int], list[PeerRecord]]:
    """Each live holder's current layer range, from its newest announcement.

    A node that moved to another stage (healing) still has its old announcement in the DHT until
    that one's TTL runs out; counting both would list it on two stages, and a heal computed from
    such a view would move it onto the stage it already holds. Only the newest one is its range.
    """
    newest: dict[bytes, PeerRecord] = {}
    for layer in range(arch.layers):
        for record in await net.node.who_holds(layer):
            if record.layer_start != layer:
                continue
            old = newest.get(record.node_id)
            if old is None or old.timestamp < record.timestamp:
                newest[record.node_id] = record
    ranges: dict[tuple[int, int], list[PeerRecord]] = {}
    for record in sorted(newest.values(), key=lambda r: r.node_id):
        ranges.setdefault((record.layer_start, record.layer_end), []).append(record)
    return ranges


async def announced_stages(net: NetworkService, arch: ModelArchitecture
                           ) -> tuple[list[tuple[int, int]], dict[int, list[str]]] | None:
    """Stages announced in the DHT with their live holders, if they tile the model exactly."""
    return tile(await announced_holders(net, arch), arch)


def tile(ranges: dict[tuple[int, int], list[PeerRecord]], arch: ModelArchitecture
         ) -> tuple[list[tuple[int, int]], dict[int, list[str]]] | None:
    """(bounds, holder ids per stage) when the announced ranges tile the model exactly, else None."""
    bounds = sorted(ranges)
    if not bounds or bounds[0][0] != 0 or bounds[-1][1] != arch.layers or any(
            b[0] != a[1] for a, b in zip(bounds, bounds[1:], strict=False)):
        return None
    return bounds, {i: sorted({r.node_id.hex() for r in ranges[b]}) for i, b in enumerate(bounds)}
