"""The INL block (seed 003): its dynamics, sharding, growth, checkpoints and adaptive stopping."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from app.node.model.architecture import ModelArchitecture
from app.node.model.checkpoint import ArchitectureMismatch, load_checkpoint, save_checkpoint
from app.node.model.generation import generate, inference_stats
from app.node.model.growth import GrowthError, grow_depth, grow_vocab, grow_width
from app.node.model.inl import MIN_ITERATIONS, INLBlock, IntegratorNeuronLayer
from app.node.model.shard import PAD_ID, ModelShard, lm_loss
from tests.model.test_shard import _pipeline_step, _split

INL = ModelArchitecture.tiny().with_changes(block_type="inl", inl_iterations=6)


def _reference_dynamics(layer: IntegratorNeuronLayer, h: torch.Tensor, steps: int) -> torch.Tensor:
    """The equations of issue #20 / seed 003 written out from the raw weights, one by one."""
    c = layer.controller
    wh, bh, wx, wv = c.read_h.weight, c.read_h.bias, c.read_x.weight, c.read_v.weight
    wo, bo = c.write.weight, c.write.bias
    d = h.shape[-1]
    mu, phi, gamma = layer.mu, layer.phi, layer.gamma
    x = mu.expand_as(h).clone()  # x0 = mu
    v = torch.zeros_like(h)  # v0 = 0
    for t in range(steps):
        z = torch.relu(h @ wh.T + bh + x @ wx.T + v @ wv.T)  # hidden 64, ReLU over (h, x, v)
        out = z @ wo.T + bo
        alpha_base = torch.sigmoid(out[..., :d])
        beta = F.softplus(out[..., d:2 * d])
        g = torch.sigmoid(out[..., 2 * d:3 * d])
        v_cand = out[..., 3 * d:]
        e = x - mu
        alpha = alpha_base * torch.exp(-1.0 * torch.sqrt((e * e).sum(-1, keepdim=True)))  # kappa = 1
        v = alpha * v + (1 - alpha) * v_cand - beta * e + 0.03 * torch.sin(gamma * t + phi)
        x = x + 0.1 * g * v
    return x


def _perturbed_layer(hidden: int = 8, iterations: int = 7) -> IntegratorNeuronLayer:
    torch.manual_seed(11)
    layer = IntegratorNeuronLayer(hidden, iterations)
    layer.init_weights()
    with torch.no_grad():  # away from the init symmetry: non-zero mu and phi, larger weights
        layer.mu.normal_(0, 0.5)
        layer.phi.uniform_(-math.pi, math.pi)
        for p in layer.controller.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return layer


def test_dynamics_match_a_direct_transcription_of_the_equations() -> None:
    layer = _perturbed_layer()
    h = torch.randn(2, 5, 8)
    assert torch.allclose(layer(h), _reference_dynamics(layer, h, 7), atol=1e-6)
    layer.adaptive_stop = False
    with torch.no_grad():
        assert torch.allclose(layer(h), _reference_dynamics(layer, h, 7), atol=1e-6)


def test_controller_starts_at_the_seed_values_and_gamma_is_drawn_around_one() -> None:
    torch.manual_seed(0)
    layer = IntegratorNeuronLayer(256, 5)
    layer.init_weights()
    with torch.no_grad():
        layer.controller.write.weight.zero_()
        zeros = torch.zeros(1, 1, 256)
        alpha_base, beta, g, v_cand = layer.controller(layer.controller.read_h(zeros), zeros, zeros)
    assert torch.allclose(alpha_base, torch.full_like(alpha_base, 0.8))
    assert torch.allclose(beta, torch.full_like(beta, 0.5))
    assert torch.allclose(g, torch.full_like(g, 0.5))
    assert torch.equal(v_cand, torch.zeros_like(v_cand))
    assert abs(float(layer.gamma.mean()) - 1.0) < 0.03 and 0.07 < float(layer.gamma.std()) < 0.13
    assert torch.equal(layer.mu, torch.zeros(256)) and layer.gamma.requires_grad is False


def test_architecture_counts_inl_parameters_and_names_the_block_type() -> None:
    whole = ModelShard.full(INL)
    assert all(isinstance(b, INLBlock) for b in whole.blocks.values())
    assert sum(p.numel() for p in whole.parameters()) == INL.param_count()
    assert sum(p.numel() for p in whole.block(0).parameters()) == INL.layer_param_count()
    assert ModelArchitecture.from_dict(INL.to_dict()) == INL
    assert ModelArchitecture.from_dict({k: v for k, v in ModelArchitecture.tiny().to_dict().items()
                                        if k not in ("block_type", "inl_iterations")}).block_type == "transformer"
    with pytest.raises(ValueError, match="block_type"):
        ModelArchitecture.from_dict({**INL.to_dict(), "block_type": "mamba"})
    with pytest.raises(ValueError, match="block_type"):
        ModelArchitecture.from_dict({**INL.to_dict(), "block_type": 3})


def test_sharded_inl_gives_same_loss_and_gradients_as_whole_inl() -> None:
    torch.manual_seed(0)
    whole = ModelShard.full(INL)
    stages = _split(whole, [(0, 1), (1, 3), (3, 4)])
    ids = torch.randint(0, INL.vocab, (2, 24))
    targets = torch.randint(0, INL.vocab, (2, 24))
    targets[1, :4] = PAD_ID
    loss = lm_loss(whole(ids), targets)
    loss.backward()
    assert torch.allclose(loss, _pipeline_step(stages, ids, targets), atol=1e-5)
    whole_grads = {k: p.grad for k, p in whole.named_parameters()}
    names = [name for stage in stages for name, _ in stage.named_parameters()]
    assert sorted(names) == sorted(whole_grads)
    for stage in stages:
        for name, p in stage.named_parameters():
            assert torch.allclose(p.grad, whole_grads[name], atol=1e-5), name


def _trained_inl(steps: int = 5) -> ModelShard:
    torch.manual_seed(0)
    model = ModelShard.full(INL)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, INL.vocab, (4, 24))
    for _ in range(steps):
        loss = lm_loss(model(ids[:, :-1]), ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _logits(model: ModelShard, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad(), model.adaptive_stopping(False):
        return model(ids)


def test_inl_trains() -> None:
    torch.manual_seed(1)
    model = ModelShard.full(INL)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(0, 256, (4, 17))
    losses = []
    for _ in range(12):
        loss = lm_loss(model(ids[:, :-1]), ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    assert all(p.grad is not None for name, p in model.named_parameters() if ".inl." in name)


def test_depth_growth_keeps_inl_logits() -> None:
    model = _trained_inl()
    ids = torch.randint(0, INL.vocab, (2, 20))
    before = _logits(model, ids)
    grown = grow_depth(model, 2)
    assert grown.architecture.layers == INL.layers + 2 and grown.architecture.block_type == "inl"
    assert torch.allclose(_logits(grown, ids), before, atol=1e-5)


def test_vocab_growth_keeps_inl_logits_and_width_growth_is_refused() -> None:
    model = _trained_inl()
    ids = torch.randint(0, INL.vocab, (2, 20))
    before = _logits(model, ids)
    grown = grow_vocab(model, 5)
    assert torch.allclose(_logits(grown, ids)[..., :INL.vocab], before, atol=1e-5)
    with pytest.raises(GrowthError, match="INL"):
        grow_width(model, INL.hidden + 32, INL.ffn + 256, INL.heads + 2)


def test_inl_checkpoint_round_trips_and_refuses_a_transformer(tmp_path: Path) -> None:
    model = _trained_inl(steps=2)
    path = tmp_path / "inl.safetensors"
    save_checkpoint(path, model.state_dict(), INL)
    loaded = load_checkpoint(path, expected_arch=INL)
    assert loaded.arch == INL
    fresh = ModelShard.full(loaded.arch)
    fresh.load_state_dict(loaded.state)
    ids = torch.randint(0, INL.vocab, (1, 12))
    assert torch.equal(_logits(fresh, ids), _logits(model, ids))
    with pytest.raises(ArchitectureMismatch):
        load_checkpoint(path, expected_arch=INL.with_changes(block_type="transformer"))


# -- adaptive stopping ----------------------------------------------------------------------------------
def _settling_layer(restoring_bias: float) -> IntegratorNeuronLayer:
    """A layer whose candidate velocity is zero, so only beta (from its bias) and the excitation
    move the state: a strong restoring force keeps every token within the stopping threshold."""
    torch.manual_seed(3)
    layer = IntegratorNeuronLayer(16, 10)
    layer.init_weights()
    with torch.no_grad():
        layer.controller.write.weight.zero_()
        layer.controller.write.bias.view(4, 16)[1].fill_(restoring_bias)
        layer.controller.write.bias.view(4, 16)[3].zero_()
    return layer


def test_adaptive_stopping_stops_once_every_token_is_at_equilibrium() -> None:
    layer = _settling_layer(restoring_bias=3.0)
    h = torch.randn(3, 4, 16)
    with torch.no_grad():
        stopped = layer(h)
        used = layer.mean_inference_iterations()
        assert used is not None and MIN_ITERATIONS <= used < 10
        used = int(used)
        # it stopped at the first step (from the minimum on) where every token was within 0.01
        distance = [float((_reference_dynamics(layer, h, k) - layer.mu).norm(dim=-1).max()) for k in range(1, 11)]
    first = next(k for k in range(MIN_ITERATIONS, 11) if distance[k - 1] < 0.01)
    assert used == first
    assert torch.allclose(stopped, _reference_dynamics(layer, h, used), atol=1e-6)
    layer.reset_inference_stats()
    layer.adaptive_stop = False
    with torch.no_grad():
        full = layer(h)
    assert layer.mean_inference_iterations() == 10
    assert torch.allclose(stopped, full, atol=0.02)


def test_adaptive_stopping_runs_every_step_while_a_token_is_away_from_equilibrium() -> None:
    layer = _settling_layer(restoring_bias=3.0)
    with torch.no_grad():
        layer.controller.write.bias.view(4, 16)[3, 0] = 1.0  # one channel keeps moving
        layer(torch.randn(2, 3, 16))
    assert layer.mean_inference_iterations() == 10


def test_training_forward_never_stops_early() -> None:
    layer = _settling_layer(restoring_bias=3.0)
    h = torch.randn(2, 3, 16, requires_grad=True)
    layer.adaptive_stop = True
    out = layer(h)
    assert layer.mean_inference_iterations() is None
    assert torch.allclose(out, _reference_dynamics(layer, h, 10), atol=1e-6)


def test_generation_reports_iterations_and_equals_uncached_without_stopping() -> None:
    torch.manual_seed(0)
    whole = ModelShard.full(INL).eval()
    stages = _split(whole, [(0, 2), (2, 4)])
    for s in stages:
        s.eval()
    prompt = [5, 6, 7]
    cached = generate(stages, prompt, 6, temperature=0, adaptive_stop=False)
    seq = list(prompt)
    with torch.no_grad(), whole.adaptive_stopping(False):
        for _ in range(6):
            seq.append(int(whole(torch.tensor([seq]))[0, -1].argmax()))
    assert cached == seq[len(prompt):]
    for s in stages:
        s.reset_inference_stats()
    generate(stages, prompt, 4, temperature=0)
    stats = inference_stats(stages)
    assert set(stats["mean_iterations_per_layer"]) == {0, 1, 2, 3}
    assert MIN_ITERATIONS <= stats["mean_iterations"] <= INL.inl_iterations == stats["max_iterations"]
    assert inference_stats([ModelShard.full(ModelArchitecture.tiny())]) == {}
