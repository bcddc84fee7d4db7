from __future__ import annotations

import pytest
import torch

from app.node.data.bundled import open_bundled_store
from app.node.data.loader import BatchLoader
from app.node.model.architecture import ModelArchitecture
from app.node.model.shard import ModelShard, lm_loss
from app.node.training.aggregation import Contribution, aggregate
from app.node.training.async_mode import AsyncConfig, AsyncModeError, AsyncTrainer, fold_async, snapshot_fits
from app.node.training.diloco import DiLoCoConfig, DiLoCoReplica


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def setup(tmp_path, one_thread):
    torch.manual_seed(0)
    arch = ModelArchitecture.tiny()
    store = open_bundled_store(tmp_path)
    loader = BatchLoader(store, store.manifest, batch_size=8, seq_len=32, seed=3, share=(1, 2))
    held_out = BatchLoader(store, store.manifest, batch_size=16, seq_len=32, seed=42).next_batch()
    return arch, loader, held_out


def _loss(model: torch.nn.Module, batch) -> float:
    with torch.no_grad():
        return float(lm_loss(model(batch[0]), batch[1]))


def test_async_round_produces_a_pseudo_gradient_that_lowers_the_loss(setup):
    arch, loader, held_out = setup
    global_model = ModelShard.full(arch)
    snapshot = {k: v.clone() for k, v in global_model.state_dict().items()}
    clock = [1000.0]
    trainer = AsyncTrainer(arch, loader, node_id="t5-node", config=AsyncConfig(steps=15, lr=1e-2),
                           clock=lambda: clock[0])
    clock[0] = 1000.0 + 7200  # two hours after the snapshot
    result = trainer.train_round(snapshot, snapshot_time=1000.0)
    c = result.contribution
    assert c.node_id == "t5-node" and c.batches == 15 and c.age_s == 7200
    assert set(c.tensors) == {n for n, _ in global_model.named_parameters()}
    assert result.tokens == 15 * 8 * 32 and len(result.losses) == 15
    before = _loss(global_model, held_out)
    replica = DiLoCoReplica(global_model, DiLoCoConfig(outer_lr=1.0, outer_momentum=0.0))
    replica.apply_outer(aggregate([c]).tensors)  # fold the async work into the global model
    assert _loss(global_model, held_out) < before - 0.5


def test_async_contribution_is_weighted_by_snapshot_freshness(setup):
    arch, loader, _ = setup
    snapshot = ModelShard.full(arch).state_dict()
    trainer = AsyncTrainer(arch, loader, node_id="slow", config=AsyncConfig(steps=4, lr=1e-3), clock=lambda: 0.0)
    result = trainer.train_round(snapshot, snapshot_time=0.0)
    names = [n for n in result.contribution.tensors if n.startswith("blocks.1.")]
    sync_member = Contribution("fast", {n: torch.zeros_like(result.contribution.tensors[n]) for n in names}, 4)
    folded = fold_async([sync_member], [result], names, now=2 * 86400.0)
    assert set(folded[1].tensors) == set(names) and folded[1].age_s == 2 * 86400.0
    weights = aggregate(folded, method="mean").weights
    assert weights["slow"] == pytest.approx(0.7 * 2) and weights["fast"] == pytest.approx(2.0)


def test_stopping_early_counts_only_trained_batches(setup):
    arch, loader, _ = setup
    trainer = AsyncTrainer(arch, loader, node_id="n", config=AsyncConfig(steps=50))
    calls = []
    result = trainer.train_round(ModelShard.full(arch).state_dict(), 0.0,
                                 should_stop=lambda: len(calls.append(1) or calls) > 3)
    assert result.contribution.batches == 3


def test_a_model_that_does_not_fit_is_refused(setup):
    arch, loader, _ = setup
    assert snapshot_fits(arch, 10**9) and not snapshot_fits(arch, 1000)
    with pytest.raises(AsyncModeError, match="cannot run async mode"):
        AsyncTrainer(arch, loader, node_id="n", memory_budget_bytes=1000)


def test_a_snapshot_of_another_architecture_is_refused(setup):
    arch, loader, _ = setup
    other = ModelShard.full(arch.with_changes(layers=2)).state_dict()
    with pytest.raises(AsyncModeError, match="does not match"):
        AsyncTrainer(arch, loader, node_id="n").train_round(other, 0.0, steps=1)
