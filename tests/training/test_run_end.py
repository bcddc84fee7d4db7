"""The end of a run for a holder no driver routed to: hearing "finish" does not make it a served
holder (so it still follows its cohort's final weights), and it stops serving once every live
driver said finish, while the holders that trained still linger."""

from __future__ import annotations

import asyncio

from training_helpers import make_stage, tiny_config

from app.node.training.trainer import NodeTrainer
from app.node.training.transport import OP_FINISH

CONFIG = tiny_config()


def test_finish_marks_a_driver_done_without_counting_it_as_routed_here() -> None:
    stage = make_stage((2, 4), CONFIG)
    out, _ = asyncio.run(stage.handle(OP_FINISH, {"driver": "d1", "step": 0}, []))
    assert out["status"] == "ok"
    assert stage.finished_drivers == {"d1"} and stage.seen_drivers == set()


def test_an_idle_replica_stops_serving_when_every_live_driver_said_finish() -> None:
    stage = make_stage((2, 4), CONFIG)
    live = {"d1", "d2"}

    async def live_drivers() -> set[str]:
        return set(live)

    trainer = NodeTrainer("replica", stage, CONFIG, live_drivers=live_drivers)

    async def scenario() -> None:
        serving = asyncio.ensure_future(trainer.run(10))
        await stage.handle(OP_FINISH, {"driver": "d1", "step": 0}, [])
        await asyncio.sleep(0)
        assert not serving.done()  # d2 still trains: a replica may yet be needed
        await stage.handle(OP_FINISH, {"driver": "d2", "step": 0}, [])
        await asyncio.wait_for(serving, 30)  # bounded: a hang fails here with a timeout

    asyncio.run(scenario())
    assert trainer.steps_this_session == 0
