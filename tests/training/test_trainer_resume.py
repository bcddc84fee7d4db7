"""NodeTrainer: steps are reported once, DiLoCo rounds run, and a restarted node resumes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from training_helpers import build_pipeline, make_stage, patterned_batch, tiny_config, trainer_hooks

from app.node.training.checkpointing import read_resume_point, restore_training_state
from app.node.training.pipeline import PipelineDriver
from app.node.training.sync import StageSync
from app.node.training.trainer import NodeTrainer, StepInfo


def _solo_trainer(tmp_path: Path, on_step=None, driver_step: int = 0, **changes: object) -> NodeTrainer:  # noqa: ANN001
    config = tiny_config(checkpoint_every=3, **changes)
    trainer: NodeTrainer | None = None
    stage = make_stage((0, 4), config, **trainer_hooks(lambda: trainer))
    driver = PipelineDriver("solo", stage, [], None, micro_batches=config.micro_batches)
    counter = iter(range(10_000))
    trainer = NodeTrainer("solo", stage, config, sync=StageSync("solo", stage, None, config), driver=driver,
                          batches=lambda: patterned_batch(config, next(counter)), data_dir=tmp_path,
                          on_step=on_step, driver_step=driver_step)
    return trainer


def test_solo_trainer_reports_each_step_once_and_runs_outer_rounds(tmp_path: Path) -> None:
    seen: list[StepInfo] = []
    trainer = _solo_trainer(tmp_path, on_step=seen.append)
    asyncio.run(trainer.run(max_steps=10))
    assert [s.step for s in seen] == list(range(10))
    assert trainer.sync is not None and trainer.sync.rounds == 2  # inner_steps=5
    assert seen[-1].loss < seen[0].loss
    assert all(s.role == "driver+validator" and s.hash_before != s.hash_after for s in seen)


def test_restarted_node_resumes_weights_optimizer_and_counters(tmp_path: Path) -> None:
    first = _solo_trainer(tmp_path)
    asyncio.run(first.run(max_steps=7))
    expected_hash = first.stage.weights_hash()

    point = read_resume_point(tmp_path)
    assert point is not None and point.driver_step == 7 and point.layer_range == (0, 4)
    seen: list[StepInfo] = []
    second = _solo_trainer(tmp_path, on_step=seen.append, driver_step=point.driver_step)
    assert second.sync is not None
    restore_training_state(point, second.stage, second.sync)
    assert second.stage.weights_hash() == expected_hash
    assert second.stage.inner_step == 7 and second.sync.replica.inner_steps_done == 2
    assert second.sync.rounds == 1
    asyncio.run(second.run(max_steps=3))
    assert [s.step for s in seen] == [7, 8, 9]


def test_two_replicas_agree_bit_for_bit_after_an_outer_round(tmp_path: Path) -> None:
    config = tiny_config(inner_steps=3, compression="int8")
    trainers: list[NodeTrainer] = []
    pipes = [build_pipeline([(0, 4)], config, hooks={"driver": trainer_hooks(lambda n=n: trainers[n] if n < len(trainers) else None)})[0]
             for n in range(2)]
    from app.node.training.transport import LocalTransport

    net = LocalTransport()
    for n, pipe in enumerate(pipes):
        name = f"r{n}"
        net.add_peer(name, (0, 4), pipe.local.handle)
        sync = StageSync(name, pipe.local, net.cohort(name), config)
        counter = iter(range(n * 1000, n * 1000 + 100))
        trainers.append(NodeTrainer(name, pipe.local, config, sync=sync, driver=pipe,
                                    batches=lambda c=counter: patterned_batch(config, next(c))))

    async def both() -> None:
        await asyncio.gather(*(t.run(max_steps=3) for t in trainers))

    asyncio.run(both())
    assert trainers[0].stage.weights_hash() == trainers[1].stage.weights_hash()
    assert all(t.sync is not None and t.sync.reports[0].members == ("r0", "r1") for t in trainers)


def test_outer_round_folds_in_async_contributions_and_rejects_poisoned_ones() -> None:
    import torch

    from app.node.training.transport import CohortPayload, LocalTransport

    config = tiny_config(inner_steps=2)
    trainer: NodeTrainer | None = None
    pipe = build_pipeline([(0, 4)], config, hooks={"driver": trainer_hooks(lambda: trainer)})[0]
    net = LocalTransport()
    net.add_peer("me", (0, 4), pipe.local.handle)
    sync = StageSync("me", pipe.local, net.cohort("me"), config)
    names = sync.replica.names
    honest = {n: torch.zeros_like(t) for n, t in sync.replica.anchor.items()}
    poisoned = {n: torch.full_like(t, float("nan")) for n, t in sync.replica.anchor.items()}
    net.async_inbox[(0, 4)] = [CohortPayload("t5-honest", 0, 4, 30.0, honest),
                               CohortPayload("t5-bad", 0, 4, 30.0, poisoned)]
    trainer = NodeTrainer("me", pipe.local, config, sync=sync, driver=pipe,
                          batches=lambda: patterned_batch(config, 0))
    asyncio.run(trainer.run(max_steps=2))
    (report,) = sync.reports
    assert set(report.members) == {"me", "t5-honest"}
    assert [who for who, _ in report.rejected] == ["t5-bad"]
    assert all(torch.isfinite(p).all() for p in pipe.local.shard.parameters()) and names
    assert net.async_inbox == {}  # consumed by the round


def test_serving_stage_checkpoints_every_n_commits(tmp_path: Path) -> None:
    config = tiny_config(checkpoint_every=2)
    worker: NodeTrainer | None = None
    driver, _net, stages = build_pipeline([(0, 2), (2, 4)], config, hooks={"s2r0": trainer_hooks(lambda: worker)})
    worker = NodeTrainer("w", stages["s2r0"], config, data_dir=tmp_path)

    async def train() -> None:
        for step in range(3):
            await driver.train_step(step, patterned_batch(config, step))

    asyncio.run(train())
    point = read_resume_point(tmp_path)
    assert worker.checkpointed_at == 2 and point is not None
    assert point.layer_range == (2, 4) and point.counters["inner_step"] == 2
