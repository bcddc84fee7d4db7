from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from app.node.data.bundled import open_bundled_store
from app.node.data.loader import BatchLoader
from app.node.model.architecture import ModelArchitecture
from app.node.model.shard import ModelShard, lm_loss
from app.node.training.aggregation import Contribution, aggregate
from app.node.training.diloco import DiLoCoConfig, DiLoCoReplica, DiLoCoStateError


def _inner_steps(model: nn.Module, steps: int, seed: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=g)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_single_replica_with_unit_lr_and_no_momentum_keeps_the_inner_result():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    replica = DiLoCoReplica(model, DiLoCoConfig(inner_steps=5, outer_lr=1.0, outer_momentum=0.0))
    _inner_steps(model, 5, seed=1)
    replica.record_inner_step(5)
    trained = copy.deepcopy(model.state_dict())
    assert replica.should_sync()
    replica.apply_outer(replica.pseudo_gradient())
    # anchor − (anchor − current) is the current weights up to one float32 rounding
    assert all(torch.allclose(model.state_dict()[k], trained[k], rtol=0, atol=1e-6) for k in trained)
    assert all(torch.equal(replica.anchor[k], model.state_dict()[k]) for k in trained)
    assert replica.inner_steps_done == 0 and not replica.should_sync()


def test_outer_step_matches_torch_nesterov_sgd_over_rounds():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    reference = [p.detach().clone().requires_grad_() for p in model.parameters()]
    sgd = torch.optim.SGD(reference, lr=0.7, momentum=0.9, nesterov=True)
    replica = DiLoCoReplica(model, DiLoCoConfig(inner_steps=3))
    for round_ in range(4):
        _inner_steps(model, 3, seed=round_)
        pseudo = replica.pseudo_gradient()
        for p, name in zip(reference, replica.names, strict=True):
            p.grad = pseudo[name].clone()
        sgd.step()
        replica.apply_outer(pseudo)
        for p, live in zip(reference, model.parameters(), strict=True):
            assert torch.allclose(p, live, atol=1e-6)


def test_parameters_are_tracked_by_object_not_name():
    model = nn.Linear(4, 2)
    replica = DiLoCoReplica(model)
    assert replica.tracks(model)
    model.weight = nn.Parameter(torch.zeros(2, 4))  # same name, new object (as width growth does)
    assert not replica.tracks(model)


def test_state_dict_round_trip_resumes_identically():
    torch.manual_seed(0)
    a = nn.Linear(4, 2)
    b = copy.deepcopy(a)
    ra = DiLoCoReplica(a, DiLoCoConfig(inner_steps=2))
    _inner_steps(a, 2, 0)
    ra.record_inner_step(2)
    ra.apply_outer(ra.pseudo_gradient())
    _inner_steps(a, 1, 1)
    ra.record_inner_step()
    b.load_state_dict(a.state_dict())
    rb = DiLoCoReplica(b, DiLoCoConfig(inner_steps=2))
    rb.load_flat_state(ra.flat_state(), ra.inner_steps_done, ra.outer_steps_done)
    for model, rep in ((a, ra), (b, rb)):
        _inner_steps(model, 1, 2)
        rep.record_inner_step()
        rep.apply_outer(rep.pseudo_gradient())
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert rb.outer_steps_done == 2


def test_bad_updates_and_states_are_refused():
    replica = DiLoCoReplica(nn.Linear(4, 2))
    with pytest.raises(DiLoCoStateError, match="missing"):
        replica.apply_outer({"weight": torch.zeros(2, 4)})
    with pytest.raises(DiLoCoStateError, match="NaN"):
        replica.apply_outer({"weight": torch.full((2, 4), float("nan")), "bias": torch.zeros(2)})
    with pytest.raises(DiLoCoStateError, match="shape"):
        replica.apply_outer({"weight": torch.zeros(4, 2), "bias": torch.zeros(2)})
    state = replica.state_dict()
    state["inner_steps_done"] = -1
    with pytest.raises(DiLoCoStateError, match="counters"):
        replica.load_state_dict(state)


@pytest.fixture
def one_thread():
    """The tiny model steps ~7x faster on one thread when the 2 CI cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_two_replicas_of_the_tiny_model_converge_and_agree(tmp_path, one_thread):
    torch.manual_seed(0)
    arch = ModelArchitecture.tiny()
    store = open_bundled_store(tmp_path)
    first = ModelShard.full(arch)
    models = [first, copy.deepcopy(first)]
    config = DiLoCoConfig(inner_steps=10)
    replicas = [DiLoCoReplica(m, config) for m in models]
    optims = [torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.0) for m in models]
    loaders = [BatchLoader(store, store.manifest, batch_size=8, seq_len=32, seed=1, share=(i, 2)) for i in range(2)]
    held_out = BatchLoader(store, store.manifest, batch_size=16, seq_len=32, seed=99).next_batch()

    def eval_loss(m: nn.Module) -> float:
        with torch.no_grad():
            return float(lm_loss(m(held_out[0]), held_out[1]))

    start = eval_loss(first)
    for _ in range(3):
        for model, opt, loader, rep in zip(models, optims, loaders, replicas, strict=True):
            for _ in range(config.inner_steps):
                inputs, targets = loader.next_batch()
                loss = lm_loss(model(inputs), targets)
                opt.zero_grad()
                loss.backward()
                opt.step()
                rep.record_inner_step()
        result = aggregate([Contribution(f"r{i}", r.pseudo_gradient(), 10) for i, r in enumerate(replicas)])
        assert result.rejected == []
        for rep in replicas:
            rep.apply_outer(result.tensors)
        assert all(torch.equal(x, y) for x, y in zip(models[0].parameters(), models[1].parameters(), strict=True))
    end = eval_loss(models[0])
    assert end < start - 1.0, (start, end)  # ln(266) ≈ 5.6 at start; bytes are learnable fast
