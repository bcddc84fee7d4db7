"""A stranger with a fresh key tries to poison a stage through its DiLoCo cohort.

Before, 24 forged payloads under 4 invented node names, sent with one key, were merged into the
outer rounds and moved a stage's loss from 2.99 to 26.1 (issue 13). Now the sender is the key
that signed, a contribution is taken only from a registered holder of the same layers, once per
round, and the exchange merges only the holders it asked: every forged payload is refused with
its status, the targets keep training, and their held-out loss equals that of a clean run.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
import torch

from app.node.model.shard import lm_loss
from app.node.p2p.errors import PeerRejected
from app.node.p2p.node import P2PNode
from app.node.p2p.protocol import pb2
from app.node.p2p.records import LayerAnnouncement
from app.node.runtime import stage_protocol
from app.node.runtime.p2p_transport import P2PCohort
from app.node.training.compression import encode_pseudo_gradient
from app.node.training.stage import StageWorker
from app.node.training.sync import StageSync
from app.node.training.transport import OP_COMMIT, OP_FORWARD
from tests.p2p.helpers import run, swarm
from tests.training.training_helpers import make_stage, patterned_batch, tiny_config

CONFIG = tiny_config(inner_steps=2, sync_timeout_s=20.0)
RANGE = (0, 4)  # the whole tiny model: each holder computes its own loss
FORGED = 24


class _Holder:
    def __init__(self, node: P2PNode, data_seed: int = 0) -> None:
        self.node = node
        self.data_seed = data_seed  # each holder trains on its own batches, as drivers' data differs
        self.stage: StageWorker = make_stage(RANGE, CONFIG)
        self.cohort = P2PCohort(node, holds=lambda: RANGE, position=self.position,
                                round_length=lambda: CONFIG.inner_steps)
        self.sync = StageSync(node.node_id.hex(), self.stage, self.cohort, CONFIG)
        node.set_sync_handler(self.cohort.handle)

    def position(self) -> tuple[int, int]:
        return self.sync.rounds, self.sync.replica.inner_steps_done

    async def train(self, steps: int, first: int = 0) -> None:
        me = self.node.node_id.hex()
        for step in range(first, first + steps):
            batch = patterned_batch(CONFIG, self.data_seed + step)
            await self.stage.handle(OP_FORWARD, {"driver": me, "step": step, "mb": 0},
                                    [batch[:, :-1], batch[:, 1:]])
            await self.stage.handle(OP_COMMIT, {"driver": me, "step": step, "microbatches": 1}, [])
            self.sync.note_commit()

    @torch.no_grad()
    def held_out_loss(self) -> float:
        batch = patterned_batch(CONFIG, 10_000)
        return float(lm_loss(self.stage.shard(batch[:, :-1]), batch[:, 1:]))


def _poison(holder: _Holder) -> dict[str, torch.Tensor]:
    """A pseudo-gradient of the right names and shapes: noise of norm 20, inside the aggregation's
    norm screen (10x the cohort median), so only membership keeps it out."""
    gen = torch.Generator().manual_seed(7)
    noise = {name: torch.randn(t.shape, generator=gen) for name, t in holder.sync.replica.anchor.items()}
    norm = float(torch.sqrt(sum(v.pow(2).sum() for v in noise.values())))
    return encode_pseudo_gradient({k: v * (20.0 / norm) for k, v in noise.items()}, holder.sync.scheme)


async def _round(attack: bool, registered_attacker: bool = False) -> tuple[list[float], list[grpc.StatusCode]]:
    codes: list[grpc.StatusCode] = []
    async with swarm(3) as (_, (n1, n2, stranger)):
        holders = [_Holder(n1, 0), _Holder(n2, 100)]
        for h in holders:
            await h.node.registry.announce(LayerAnnouncement(*RANGE, "T3", 1.0))
        if registered_attacker:
            await stranger.registry.announce(LayerAnnouncement(*RANGE, "T3", 1.0))
        for h in holders:
            await h.train(CONFIG.inner_steps)
        if attack:
            for i in range(FORGED):
                target = holders[i % 2]
                request = stage_protocol.sync_request(RANGE, 0, CONFIG.inner_steps, 0.0)
                try:
                    await stranger.call_sync(target.node.record(), request, _poison(target), 10)
                    codes.append(grpc.StatusCode.OK)
                except PeerRejected as exc:
                    codes.append(exc.code)
        await asyncio.gather(*(h.sync.sync() for h in holders))
        for h in holders:  # the targets keep training after the attack
            await h.train(1, first=CONFIG.inner_steps)
            assert h.stage.inner_step == CONFIG.inner_steps + 1 and h.sync.rounds == 1
        return [h.held_out_loss() for h in holders], codes


def test_forged_cohort_payloads_from_a_stranger_are_refused_and_leave_the_loss_unchanged() -> None:
    clean, _ = run(_round(attack=False), timeout=120)
    attacked, codes = run(_round(attack=True), timeout=120)
    assert codes == [grpc.StatusCode.PERMISSION_DENIED] * FORGED
    assert attacked == pytest.approx(clean, abs=1e-6)


def test_a_registered_stranger_gets_one_contribution_per_round_at_most() -> None:
    _, codes = run(_round(attack=True, registered_attacker=True), timeout=120)
    assert codes[:2] == [grpc.StatusCode.OK, grpc.StatusCode.OK]  # one per holder
    assert codes[2:] == [grpc.StatusCode.ALREADY_EXISTS] * (FORGED - 2)


def test_json_meta_with_invented_names_is_not_a_contribution() -> None:
    async def scenario() -> None:
        async with swarm(2) as (_, (n1, stranger)):
            holder = _Holder(n1)
            await n1.registry.announce(LayerAnnouncement(*RANGE, "T3", 1.0))
            for name in ("aa", "bb", "cc", "dd"):
                meta = {"range": list(RANGE), "round": 0, "batches": 10**30, "node": name * 32}
                with pytest.raises(PeerRejected) as err:
                    await stranger.call_sync(n1.record(), meta, _poison(holder), 10)
                assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert holder.cohort._boxes == {}

    run(scenario())


def test_claimed_batches_are_bounded_by_the_round_length() -> None:
    async def scenario() -> None:
        async with swarm(2) as (_, (n1, n2)):
            receiver, sender = _Holder(n1), _Holder(n2)
            for h in (receiver, sender):
                await h.node.registry.announce(LayerAnnouncement(*RANGE, "T3", 1.0))
            request = stage_protocol.sync_request(RANGE, 0, 1 << 31, 0.0)
            reply, _ = await n2.call_sync(n1.record(), request, _poison(sender), 10)
            assert reply.status == pb2.STAGE_OK
            [payload] = receiver.cohort._boxes[(RANGE, 0)].values()
            assert payload.batches == CONFIG.inner_steps

    run(scenario())
