"""A DiLoCo round waits for a replica whose driver has not trained in it yet but will.

Before, a holder that reached the end of a round asked its cohort where each member stood and
waited only for members that had already trained in the round. A replica that started a little
later (still at inner step 0) was left out: the round closed with one member, the late one's work
for that round was thrown away when it caught up, and two runs of the same devnet ended on
different weights depending on which node got going first. Now a holder's answer says whether
its driver still has the steps to reach the end of the round asked about (also while it still
closes the round before), and such a member is waited for (within ``sync_timeout_s``); an idle
replica, or a driver whose plan ends before the round does, is not.
"""

from __future__ import annotations

import asyncio

import torch

from app.node.p2p.node import P2PNode
from app.node.p2p.records import LayerAnnouncement
from app.node.runtime.p2p_transport import P2PCohort
from app.node.training.stage import StageWorker
from app.node.training.sync import StageSync, SyncReport
from app.node.training.transport import OP_COMMIT, OP_FORWARD
from tests.p2p.helpers import run, swarm
from tests.training.training_helpers import make_stage, patterned_batch, tiny_config

CONFIG = tiny_config(inner_steps=2, sync_timeout_s=30.0)
RANGE = (0, 4)


class _Replica:
    """One holder of the whole tiny model with its cohort wired as a node's stage host wires it."""

    def __init__(self, node: P2PNode, data_seed: int) -> None:
        self.node = node
        self.data_seed = data_seed
        self.stage: StageWorker = make_stage(RANGE, CONFIG)
        self.cohort = P2PCohort(node, holds=lambda: RANGE, position=self.position,
                                round_length=lambda: CONFIG.inner_steps,
                                training=self.will_send_for)
        self.sync = StageSync(node.node_id.hex(), self.stage, self.cohort, CONFIG)
        node.set_sync_handler(self.cohort.handle)

    def will_send_for(self, round_: int) -> bool:
        return self.sync.will_send_for(round_)

    def position(self) -> tuple[int, int]:
        return self.sync.rounds, self.sync.replica.inner_steps_done

    async def train(self, steps: int) -> None:
        me = self.node.node_id.hex()
        for step in range(steps):
            batch = patterned_batch(CONFIG, self.data_seed + step)
            await self.stage.handle(OP_FORWARD, {"driver": me, "step": step, "mb": 0}, [batch[:, :-1], batch[:, 1:]])
            await self.stage.handle(OP_COMMIT, {"driver": me, "step": step, "microbatches": 1}, [])
            self.sync.note_commit()


async def _first_round(late_steps_left: int | None) -> tuple[SyncReport, SyncReport | None, bool]:
    """The early replica trains its round and syncs while the late one has not begun; the late
    one's driver has ``late_steps_left`` steps (None: unbounded). Returns the early one's report,
    the late one's (when it trains the round too) and whether both ended on the same weights."""
    async with swarm(2) as (_, (n1, n2)):
        early, late = _Replica(n1, 0), _Replica(n2, 100)
        for r in (early, late):
            await r.node.registry.announce(LayerAnnouncement(*RANGE, "T3", 1.0))
        early.sync.note_own_steps(CONFIG.inner_steps)
        late.sync.note_own_steps(late_steps_left)
        await early.train(CONFIG.inner_steps)
        closing = asyncio.ensure_future(early.sync.sync())
        # the early replica's payload has reached the late one before the late one trains at all
        while late.cohort.latest_round(RANGE) is None and not closing.done():
            await asyncio.sleep(0.01)
        if late_steps_left == 0 or (late_steps_left is not None and late_steps_left < CONFIG.inner_steps):
            return await closing, None, False
        await late.train(CONFIG.inner_steps)
        late_report, early_report = await asyncio.gather(late.sync.sync(), closing)
        same = all(torch.equal(a, b) for a, b in zip(early.stage.shard.state_dict().values(),
                                                      late.stage.shard.state_dict().values(), strict=True))
        return early_report, late_report, same


def test_a_round_waits_for_a_replica_whose_driver_has_not_started_it_yet() -> None:
    early, late, same = run(_first_round(late_steps_left=10), timeout=120)
    assert len(early.members) == 2 and late is not None and len(late.members) == 2
    assert same  # both merged both pseudo-gradients in the same order: one anchor again


def test_an_unbounded_driver_is_waited_for_too() -> None:
    early, late, _ = run(_first_round(late_steps_left=None), timeout=120)
    assert len(early.members) == 2 and late is not None and len(late.members) == 2


def test_an_idle_replica_is_not_waited_for() -> None:
    early, _, _ = run(_first_round(late_steps_left=0), timeout=120)
    assert len(early.members) == 1  # closed alone: a replica no driver trains would never send


def test_a_driver_whose_plan_ends_inside_the_round_is_not_waited_for() -> None:
    early, _, _ = run(_first_round(late_steps_left=CONFIG.inner_steps - 1), timeout=120)
    assert len(early.members) == 1


async def _round_after(late_steps_left: int | None) -> tuple[SyncReport, SyncReport | None]:
    """The early replica closes round 1 while the late one has trained round 0 to its end but
    not closed it yet (a step or two behind, as on a loaded machine); the late one's driver has
    ``late_steps_left`` steps. Returns the early one's round-1 report and the late one's."""
    async with swarm(2) as (_, (n1, n2)):
        early, late = _Replica(n1, 0), _Replica(n2, 100)
        for r in (early, late):
            await r.node.registry.announce(LayerAnnouncement(*RANGE, "T3", 1.0))
        early.sync.adopt_position(1)  # it closed round 0 already
        early.sync.note_own_steps(CONFIG.inner_steps)
        await late.train(CONFIG.inner_steps)
        late.sync.note_own_steps(late_steps_left)
        await early.train(CONFIG.inner_steps)
        closing = asyncio.ensure_future(early.sync.sync())
        while (late.cohort.latest_round(RANGE) or (None,))[0] != 1 and not closing.done():
            await asyncio.sleep(0.01)  # until its round-1 payload has reached the late one
        if late_steps_left is not None and late_steps_left < CONFIG.inner_steps:
            return await closing, None
        await late.sync.sync()  # round 0, which the early one closed already (it answers "stale")
        await late.train(CONFIG.inner_steps)
        late_report, early_report = await asyncio.gather(late.sync.sync(), closing)
        return early_report, late_report


def test_a_round_waits_for_a_replica_still_closing_the_round_before() -> None:
    """Before, the late replica's answer named its own round (0), not the one asked about, so the
    early one closed round 1 alone and the late one's work for it was dropped (a loaded 2-replica
    devnet ended a round with one contribution)."""
    early, late = run(_round_after(late_steps_left=10), timeout=120)
    assert early.round == 1 and len(early.members) == 2, early
    assert late is not None and late.round == 1 and len(late.members) == 2, late


def test_a_replica_behind_whose_plan_ends_before_the_next_round_does_is_not_waited_for() -> None:
    early, _ = run(_round_after(late_steps_left=CONFIG.inner_steps - 1), timeout=120)
    assert early.round == 1 and len(early.members) == 1, early
