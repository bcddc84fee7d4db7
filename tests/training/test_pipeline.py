"""The pipeline schedule: shards through a LocalTransport behave like the whole model."""

from __future__ import annotations

import asyncio

import pytest
import torch
from training_helpers import ARCH, build_pipeline, patterned_batch, random_batch, tiny_config

from app.node.model.shard import lm_loss
from app.node.training.pipeline import PipelineStalled
from app.node.training.stage import build_shard


def test_pipeline_of_shards_gives_same_loss_and_update_as_whole_model() -> None:
    config = tiny_config(grad_clip=1e9)  # unclipped here; the next test clips every step
    driver, _net, stages = build_pipeline([(0, 1), (1, 3), (3, 4)], config)
    whole_stage = build_pipeline([(0, 4)], config)[0]
    batch = random_batch(config, 1)
    whole = build_shard(ARCH, (0, 4), with_embedding=True, with_head=True, seed=0)
    expected = lm_loss(whole(batch[:, :-1]), batch[:, 1:]).item()

    piped = asyncio.run(driver.train_step(0, batch))
    solo = asyncio.run(whole_stage.train_step(0, batch))

    assert abs(piped.loss - expected) < 1e-4
    assert abs(solo.loss - expected) < 1e-4
    # After one identical AdamW step, every layer equals the single-process model's layer.
    solo_state = whole_stage.local.shard.state_dict()
    for stage in stages.values():
        for name, tensor in stage.shard.state_dict().items():
            assert torch.allclose(tensor, solo_state[name], atol=1e-5), name


def test_clipping_is_global_across_stages_as_in_one_process() -> None:
    """With a clip threshold every step hits, the stages scale their gradients by the factor of the
    whole model's norm (the driver sums the stages' shares), so after several AdamW steps the
    pipeline still equals the single-process model; per-stage clipping would drift from it."""
    config = tiny_config(grad_clip=0.05)
    driver, _net, stages = build_pipeline([(0, 1), (1, 3), (3, 4)], config)
    whole_stage = build_pipeline([(0, 4)], config)[0]
    for step in range(3):
        batch = random_batch(config, 10 + step)
        asyncio.run(driver.train_step(step, batch))
        asyncio.run(whole_stage.train_step(step, batch))
    solo_state = whole_stage.local.shard.state_dict()
    for stage in stages.values():
        for name, tensor in stage.shard.state_dict().items():
            assert torch.allclose(tensor, solo_state[name], atol=1e-5), name


def test_pipeline_training_lowers_loss() -> None:
    config = tiny_config()
    driver, _net, _stages = build_pipeline([(0, 2), (2, 4)], config)

    async def train() -> list[float]:
        return [(await driver.train_step(s, patterned_batch(config, s))).loss for s in range(25)]

    losses = asyncio.run(train())
    assert losses[-1] < 0.6 * losses[0]


def test_failover_completes_step_after_stage_holder_is_killed() -> None:
    config = tiny_config(micro_batches=4)
    driver, net, stages = build_pipeline([(0, 2), (2, 4)], config, replicas=2)

    async def train() -> list[int]:
        await driver.train_step(0, patterned_batch(config, 0))
        first = driver.routes[2]
        assert first is not None
        net.kill(first)
        result = await driver.train_step(1, patterned_batch(config, 1))
        assert driver.routes[2] != first
        return [result.step, stages[first].inner_step, stages[driver.routes[2]].inner_step]

    step, dead_steps, replica_steps = asyncio.run(train())
    assert step == 1
    assert dead_steps == 1  # the killed holder applied only step 0
    assert replica_steps == 1  # the replica applied step 1 exactly once
    assert stages["driver"].inner_step == 2


def test_replica_taking_over_mid_step_replays_only_missing_microbatches() -> None:
    config = tiny_config(micro_batches=4)
    driver, net, stages = build_pipeline([(0, 2), (2, 4)], config, replicas=2)
    original_call = net.call
    calls = {"n": 0}

    async def killing_call(start, op, meta, tensors, **kw):  # noqa: ANN001, ANN202
        reply = await original_call(start, op, meta, tensors, **kw)
        calls["n"] += 1
        if calls["n"] == 3:  # after two micro-batches went through the first holder
            net.kill(reply.peer)
        return reply

    net.call = killing_call  # type: ignore[method-assign]
    result = asyncio.run(driver.train_step(0, patterned_batch(config, 0)))
    survivor = stages[driver.routes[2]]
    assert survivor.inner_step == 1
    assert stages["driver"].inner_step == 1
    assert result.replays >= 1
    assert result.tokens == config.batch_size * config.seq_len


def test_a_commit_with_a_malformed_gradient_norm_is_refused() -> None:
    import pytest

    from app.node.training.transport import OP_COMMIT, GiveUp

    _driver, _net, stages = build_pipeline([(0, 2), (2, 4)], tiny_config())
    stage = next(iter(stages.values()))
    for bad in (float("nan"), -1.0, "big", True):
        with pytest.raises(GiveUp, match="grad_norm"):
            stage.handle_sync(OP_COMMIT, {"driver": "d", "step": 0, "microbatches": 1, "loss": 1.0,
                                          "grad_norm": bad}, [])


def test_the_driver_replays_as_often_and_as_late_as_its_transport_says() -> None:
    """One owner of retries: the driver keeps no attempt count or back-off of its own."""
    driver, net, _ = build_pipeline([(0, 2), (2, 4)], tiny_config())
    asked: list[int] = []

    def retry_delay(attempt: int) -> float | None:
        asked.append(attempt)
        return None if attempt >= 2 else 0.0

    net.retry_delay = retry_delay  # type: ignore[method-assign]
    net.kill("s2r0")  # the only holder of the second stage: every micro-batch fails
    with pytest.raises(PipelineStalled, match="failed 3 times"):
        asyncio.run(driver.train_step(0, patterned_batch(tiny_config(), 0)))
    assert set(asked) == {0, 1, 2}  # asked after each failure; the third answer (None) ended the step
