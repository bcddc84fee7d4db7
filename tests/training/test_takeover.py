"""A dead driver's stream taken over: the progress record, the choice of taker, and the trainer
training its own plan and an adopted one (in process, over the LocalTransport)."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from training_helpers import build_pipeline, patterned_batch, tiny_config

from app.node.training.takeover import DataStream, DriverProgress, ProgressError, choose_taker
from app.node.training.trainer import NodeTrainer

CONFIG = tiny_config()


def test_progress_record_round_trips_and_refuses_what_its_publisher_did_not_say() -> None:
    record = DriverProgress("d1", 8, 12, {"seed": 3, "epoch": 0, "cursor": 64}, "training")
    assert DriverProgress.parse(record.to_bytes(), "d1") == record and record.remaining == 4
    with pytest.raises(ProgressError, match="another driver"):
        DriverProgress.parse(record.to_bytes(), "d2")
    for bad in ({"position": -1}, {"position": 13}, {"planned": True}, {"state": "asleep"}, {"loader": []},
                {"v": 2}, {"position": 1 << 50, "planned": None}):
        raw = {**json.loads(record.to_bytes()), **bad}
        with pytest.raises(ProgressError):
            DriverProgress.parse(json.dumps(raw).encode(), "d1")
    with pytest.raises(ProgressError, match="JSON"):
        DriverProgress.parse(b"\xff", "d1")
    assert DriverProgress("d1", 5, None, {}).remaining is None


def test_every_survivor_names_the_same_taker_and_never_the_dead_driver() -> None:
    live = ["a", "b", "c"]
    taker = choose_taker("dead", live)
    assert taker in live and all(choose_taker("dead", list(reversed(live)) + ["dead"]) == taker for _ in range(3))
    assert choose_taker("dead", ["dead"]) is None
    assert len({choose_taker(f"dead{i}", live) for i in range(30)}) > 1  # the load spreads


class _FakeTakeover:
    """Hands the trainer one adopted stream when it settles, and records what it published."""

    def __init__(self, adopted: DataStream) -> None:
        self.adopted: list[DataStream] = [adopted]
        self.published: list[DriverProgress] = []

    async def publish(self, progress: DriverProgress) -> None:
        self.published.append(progress)

    async def poll(self) -> list[DataStream]:
        return []

    async def settle(self) -> list[DataStream]:
        out, self.adopted = self.adopted, []
        return out


def test_a_driver_trains_its_own_plan_then_the_adopted_stream_and_reports_both() -> None:
    driver, _net, stages = build_pipeline([(0, 2), (2, 4)], CONFIG)
    seen: list[torch.Tensor] = []

    def dead_stream() -> torch.Tensor:
        batch = patterned_batch(CONFIG, 1000 + len(seen))
        seen.append(batch)
        return batch

    own = iter(range(100))
    takeover = _FakeTakeover(DataStream(dead_stream, 3, adopted_from="dead", start=2))
    trainer = NodeTrainer("driver", stages["driver"], CONFIG, driver=driver,
                          batches=lambda: patterned_batch(CONFIG, next(own)), takeover=takeover,
                          loader_state=lambda: {"cursor": 1})
    asyncio.run(trainer.run(4))
    assert trainer.own_steps == 4 and trainer.driver_step == 7 and len(seen) == 3
    assert trainer.taken_over() == [{"driver": "dead", "from_step": 2, "steps": 3, "planned": 3}]
    assert stages["s2r0"].inner_step == 7  # every step went through the pipeline once
    assert [p.state for p in takeover.published] == ["training", "settling", "done"]
    assert takeover.published[-1].position == 4 and takeover.published[-1].planned == 4


def test_an_adopted_stream_is_never_longer_than_the_drivers_own_plan() -> None:
    driver, _net, stages = build_pipeline([(0, 2), (2, 4)], CONFIG)
    huge = DataStream(lambda: patterned_batch(CONFIG, 7), 1 << 40, adopted_from="liar", start=0)
    trainer = NodeTrainer("driver", stages["driver"], CONFIG, driver=driver,
                          batches=lambda: patterned_batch(CONFIG, 1), takeover=_FakeTakeover(huge))
    asyncio.run(trainer.run(2))
    assert trainer.own_steps == 2 and trainer.taken_over()[0]["steps"] == 2 and trainer.driver_step == 4
