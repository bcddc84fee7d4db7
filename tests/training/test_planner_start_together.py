"""Planner: nodes that start together end up on the same deterministic plan, even when the slower
ones already see the faster ones' announcements (no 3 drivers + 1 lone validator out of 4)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from app.node.model.architecture import ModelArchitecture
from app.node.p2p.records import PeerRecord
from app.node.runtime.planner import Planner, offer_of
from app.node.training.config import TrainingConfig
from app.node.training.layer_pool import DynamicLayerPool

ARCH = ModelArchitecture.tiny()
CONFIG = TrainingConfig.from_dict({"model": "tiny", "max_layers_per_node": 2, "expected_nodes": 4})


def _record(name: str, layers: tuple[int, int] = (0, 0)) -> PeerRecord:
    return PeerRecord(public_key=name.encode(), address="127.0.0.1:1", capacity=100.0, timestamp=time.time(),
                      layer_start=layers[0], layer_end=layers[1])


@dataclass
class _View:
    """What one node sees: the other nodes (tracker) and the announcements so far (DHT)."""

    others: list[PeerRecord]
    announced: list[PeerRecord]
    solo: bool = False

    @property
    def node(self) -> _View:
        return self

    async def who_holds(self, layer: int) -> list[PeerRecord]:
        return [r for r in self.announced if r.layer_start <= layer < r.layer_end]

    async def peers(self) -> list[PeerRecord]:
        return self.others


def _assign(me: PeerRecord, everyone: list[PeerRecord], announced: list[PeerRecord]):  # noqa: ANN202
    view = _View([r for r in everyone if r.node_id != me.node_id], announced)
    planner = Planner(view, ARCH, CONFIG, lambda _text: None)  # type: ignore[arg-type]
    return asyncio.run(planner.assign(offer_of(me)))


def test_late_starters_take_their_row_of_the_plan_the_early_ones_followed() -> None:
    nodes = [_record(f"n{i}") for i in range(4)]
    plan = DynamicLayerPool(ARCH, max_layers_per_node=2).plan([offer_of(r) for r in nodes])
    row = {a.node_id: a for a in plan}
    # the two fastest nodes (one per stage) announced already; the other two plan now, at once
    early = [nodes[i] for i in range(4) if row[nodes[i].node_id.hex()].stage == 0][:1] + \
            [nodes[i] for i in range(4) if row[nodes[i].node_id.hex()].stage == 1][:1]
    announced = [_record(r.public_key.decode(), row[r.node_id.hex()].layer_range) for r in early]
    late = [r for r in nodes if r not in early]
    got = {r.node_id.hex(): _assign(r, nodes, announced) for r in late}
    for node_id, assignment in got.items():
        assert assignment.layer_range == row[node_id].layer_range  # the plan's row, not "least replicated"
        assert assignment.download_from is not None  # a holder of that stage trained already: copy it
    stages = Counter(a.stage for a in [*got.values(), *(row[r.node_id.hex()] for r in early)])
    assert stages == {0: 2, 1: 2}


def test_a_newcomer_to_a_network_that_followed_another_plan_joins_the_least_replicated_stage() -> None:
    holders = [_record("a", (0, 2)), _record("b", (0, 2)), _record("c", (0, 2)), _record("d", (2, 4))]
    me = _record("newcomer")
    assignment = _assign(me, [*holders, me], holders)
    assert assignment.layer_range == (2, 4) and assignment.download_from == holders[3].node_id.hex()
