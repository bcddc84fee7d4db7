"""Seed 003's variance-weighted term and cycle scheduler as training options (training/inl_losses.py)."""

from __future__ import annotations

import pytest
import torch

from app.node.model.architecture import ModelArchitecture
from app.node.model.inl import INLBlock
from app.node.model.shard import ModelShard, lm_loss
from app.node.training.config import TrainingConfig, TrainingConfigError
from app.node.training.inl_losses import (
    EXPLORATION_FACTOR,
    CycleSchedule,
    attach_penalty,
    variance_weighted_penalty,
)
from app.node.training.speed import SpeedPlan, apply_speed
from app.node.training.stage import StageWorker, build_shard
from tests.model.test_shard import _pipeline_step, _split

INL = ModelArchitecture.tiny().with_changes(block_type="inl", inl_iterations=4)


def test_penalty_weighs_unstable_channels_more() -> None:
    steady = torch.zeros(64, 2)
    steady[:, 0] = 0.5  # channel 0: always 0.5 away from equilibrium, no variance
    steady[::2, 1], steady[1::2, 1] = 0.0, 1.0  # channel 1: the same mean square, but it varies
    weights_times_msq = variance_weighted_penalty(steady)
    # channel 0 has variance 0 (weight 0), channel 1 all the weight (2): 2 · mean(e²) = 2 · 0.5
    assert float(weights_times_msq) == pytest.approx(1.0)


def test_cycles_alternate_equilibrium_and_exploration_then_settle() -> None:
    s = CycleSchedule(equilibrium_steps=10, exploration_steps=20, cycles=2)
    phases = [s.is_exploration(t) for t in range(70)]
    assert phases[:10] == [False] * 10 and phases[10:30] == [True] * 20
    assert phases[30:40] == [False] * 10 and phases[40:60] == [True] * 20 and not any(phases[60:])
    assert s.penalty_factor(15) == EXPLORATION_FACTOR and s.penalty_factor(5) == 1.0


def _grads(model: ModelShard) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_attached_penalty_adds_exactly_its_gradient_and_keeps_the_output() -> None:
    torch.manual_seed(0)
    plain = ModelShard.full(INL)
    regular = ModelShard.full(INL)
    regular.load_state_dict(plain.state_dict())
    assert attach_penalty(regular, 0.5, None, step=lambda: 0) == INL.layers
    ids = torch.randint(0, INL.vocab, (2, 17))
    loss = lm_loss(regular(ids[:, :-1]), ids[:, 1:])
    loss.backward()
    for block in plain.blocks.values():
        assert isinstance(block, INLBlock)
        block.inl.record_error = True
    errors = []
    h = plain.embedding(ids[:, :-1])
    cos, sin = plain.rope_cos[:16], plain.rope_sin[:16]
    for block in plain.blocks.values():
        h = block(h, cos, sin)
        errors.append(block.inl.last_error)
    expected = lm_loss(plain.head(h), ids[:, 1:])
    assert torch.allclose(loss, expected)  # the reported loss is the plain cross-entropy
    (expected + 0.5 * sum(variance_weighted_penalty(e) for e in errors)).backward()
    got, want = _grads(regular), _grads(plain)
    assert set(got) == set(want)
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-6), name


def test_penalty_in_a_pipeline_equals_the_whole_model_with_checkpointing() -> None:
    torch.manual_seed(1)
    whole = ModelShard.full(INL)
    stages = _split(whole, [(0, 2), (2, 4)])
    attach_penalty(whole, 0.3, None, step=lambda: 0)
    for s in stages:
        attach_penalty(s, 0.3, None, step=lambda: 0)
        apply_speed(s, SpeedPlan(checkpoint_activations=True))
    ids = torch.randint(0, INL.vocab, (2, 20))
    targets = torch.randint(0, INL.vocab, (2, 20))
    lm_loss(whole(ids), targets).backward()
    _pipeline_step(stages, ids, targets)
    want = _grads(whole)
    for stage in stages:
        for name, grad in _grads(stage).items():
            assert torch.allclose(grad, want[name], atol=1e-5), name


def test_exploration_phase_scales_the_penalty_gradient() -> None:
    torch.manual_seed(2)
    models = [ModelShard.full(INL) for _ in range(3)]
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())
    schedule = CycleSchedule(equilibrium_steps=1, exploration_steps=1, cycles=1)
    attach_penalty(models[1], 1.0, schedule, step=lambda: 0)  # equilibrium: full weight
    attach_penalty(models[2], 1.0, schedule, step=lambda: 1)  # exploration: EXPLORATION_FACTOR
    ids = torch.randint(0, INL.vocab, (2, 17))
    for m in models:
        lm_loss(m(ids[:, :-1]), ids[:, 1:]).backward()
    name = "blocks.0.inl.mu"
    base, full, explored = (dict(m.named_parameters())[name].grad for m in models)
    assert torch.allclose(explored - base, EXPLORATION_FACTOR * (full - base), atol=1e-6)
    assert not torch.allclose(full, base)


def test_options_are_off_by_default_and_validated() -> None:
    config = TrainingConfig.from_dict({"model": "tiny", "block_type": "inl"})
    assert config.architecture().block_type == "inl"
    assert config.variance_loss_weight == 0 and config.cycle_schedule == "off"
    stage = StageWorker(build_shard(config.architecture(), (0, 4), with_embedding=True, with_head=True, seed=0),
                        config)
    assert all("forward" not in b.__dict__ for b in stage.shard.blocks.values())
    on = TrainingConfig.from_dict({"model": "tiny", "block_type": "inl", "variance_loss_weight": 0.01,
                                   "cycle_schedule": "balanced"})
    stage = StageWorker(build_shard(on.architecture(), (0, 4), with_embedding=True, with_head=True, seed=0), on)
    assert all("forward" in b.__dict__ for b in stage.shard.blocks.values())
    low = TrainingConfig.from_dict({"model": "tiny", "embedding_rank": 32})
    shard = build_shard(low.architecture(), (0, 4), with_embedding=True, with_head=True, seed=0)
    assert shard.low_rank == 32 and shard.embedding.proj is not None
    for bad in ({"block_type": "rnn"}, {"embedding_rank": -1}, {"model": "tiny", "embedding_rank": 64}, {"cycle_schedule": "always"}, {"variance_loss_weight": -1.0}):
        with pytest.raises(TrainingConfigError):
            TrainingConfig.from_dict(bad)
