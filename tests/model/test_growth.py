"""Growth keeps what the model computes, and the grown model still learns."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from app.node.model.architecture import ModelArchitecture
from app.node.model.growth import (
    GrowthError,
    GrowthPolicy,
    activation_utilisation,
    grow_depth,
    grow_to,
    grow_vocab,
    grow_width,
    should_grow,
)
from app.node.model.shard import ModelShard, lm_loss


def _trained_model(arch: ModelArchitecture, low_rank: int | None = None, steps: int = 5) -> ModelShard:
    """A model whose weights are not at their init symmetry (norm weights != 1, etc.)."""
    torch.manual_seed(0)
    model = ModelShard.full(arch, low_rank=low_rank)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, arch.vocab, (4, 24))
    for _ in range(steps):
        loss = lm_loss(model(ids[:, :-1]), ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _logits(model: ModelShard, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(ids)


def _still_trains(model: ModelShard) -> None:
    old_ids = set(map(id, model.parameters()))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(0, 256, (4, 24))
    losses = []
    for _ in range(12):
        loss = lm_loss(model(ids[:, :-1]), ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in model.parameters())
    assert old_ids == set(map(id, model.parameters()))


IDS = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("position", ["middle", 0, 4])
def test_grow_depth_preserves_logits_and_trains(position: str | int) -> None:
    model = _trained_model(ModelArchitecture.tiny())
    before = _logits(model, IDS)
    grown = grow_depth(model, 2, position=position)
    assert grown.architecture.layers == 6 and grown.architecture.version == 2
    assert torch.allclose(_logits(grown, IDS), before, atol=1e-4)
    grown.train()
    _still_trains(grown)


def test_grow_depth_returns_new_parameter_objects() -> None:
    model = _trained_model(ModelArchitecture.tiny(), steps=1)
    grown = grow_depth(model, 1)
    assert not set(map(id, model.parameters())) & set(map(id, grown.parameters()))


@pytest.mark.parametrize("low_rank", [None, 16])
def test_grow_width_preserves_logits_and_trains(low_rank: int | None) -> None:
    model = _trained_model(ModelArchitecture.tiny(), low_rank=low_rank)
    before = _logits(model, IDS)
    grown = grow_width(model, new_hidden=96, new_ffn=384, new_heads=6)
    arch = grown.architecture
    assert (arch.hidden, arch.ffn, arch.heads, arch.kv_heads) == (96, 384, 6, 3)
    assert torch.allclose(_logits(grown, IDS), before, atol=1e-4)
    grown.train()
    _still_trains(grown)


def test_grow_width_with_tied_embeddings_preserves_logits() -> None:
    model = _trained_model(ModelArchitecture.tiny().with_changes(tie_embeddings=True))
    before = _logits(model, IDS)
    grown = grow_width(model, 128, 512, 8)
    assert grown.head.out.weight is grown.embedding.table.weight
    assert torch.allclose(_logits(grown, IDS), before, atol=1e-4)


def test_grow_width_refuses_changing_head_size() -> None:
    model = ModelShard.full(ModelArchitecture.tiny())
    with pytest.raises(GrowthError, match="head_dim"):
        grow_width(model, 96, 384, 4)
    with pytest.raises(GrowthError, match="only grow"):
        grow_width(model, 32, 256, 2)


@pytest.mark.parametrize("low_rank", [None, 16])
def test_grow_vocab_preserves_old_logits_and_trains(low_rank: int | None) -> None:
    model = _trained_model(ModelArchitecture.tiny(), low_rank=low_rank)
    before = _logits(model, IDS)
    grown = grow_vocab(model, 3, sources=[[104, 101], [116, 104], [266, 32]])
    after = _logits(grown, IDS)
    assert after.shape[-1] == 269
    assert torch.allclose(after[..., :266], before, atol=1e-4)
    emb = grown.embedding.table.weight
    assert torch.allclose(emb[266], emb[[104, 101]].mean(0))
    grown.train()
    _still_trains(grown)


def test_widened_pipeline_stage_maps_zero_padded_input_to_same_logits() -> None:
    model = _trained_model(ModelArchitecture.tiny(), steps=2)
    stage = ModelShard(model.architecture, 2, 4, with_embedding=False, with_head=True)
    stage.load_state_dict(model.state_dict(), strict=False)
    stage.eval()
    x = torch.randn(2, 10, 64)
    wide = grow_width(stage, 96, 384, 6).eval()
    padded = torch.cat((x, torch.zeros(2, 10, 32)), dim=-1)
    with torch.no_grad():
        assert torch.allclose(wide(padded), stage(x), atol=1e-4)


def test_grow_to_reaches_target_architecture_and_preserves_logits() -> None:
    model = _trained_model(ModelArchitecture.tiny())
    before = _logits(model, IDS)
    target = ModelArchitecture.tiny().with_changes(hidden=128, heads=8, kv_heads=4, ffn=512, layers=6,
                                                   vocab=300, version=7)
    grown = grow_to(model, target)
    arch = grown.architecture
    assert arch.with_changes(norm_eps=target.norm_eps) == target
    assert torch.allclose(_logits(grown, IDS)[..., :266], before, atol=1e-4)


def test_should_grow_respects_threshold_cooldown_and_max_layers() -> None:
    policy = GrowthPolicy(threshold=0.9, saturated_fraction=0.75, cooldown=100, max_layers=10, factor=4)
    busy, idle = [0.95] * 4, [0.95, 0.5, 0.5, 0.95]
    assert should_grow(policy, busy, step=1000, last_growth_step=None, layers=4) == 4
    assert should_grow(policy, idle, step=1000, last_growth_step=None, layers=4) == 0
    assert should_grow(policy, busy, step=1050, last_growth_step=1000, layers=4) == 0
    assert should_grow(policy, busy, step=1100, last_growth_step=1000, layers=4) == 4
    assert should_grow(policy, busy, step=1100, last_growth_step=None, layers=8) == 2
    assert should_grow(policy, busy, step=1100, last_growth_step=None, layers=10) == 0
    with pytest.raises(ValueError):
        GrowthPolicy(min_layers=5, max_layers=4)


def test_activation_utilisation_counts_used_channels() -> None:
    h = torch.randn(2, 8, 10)
    assert activation_utilisation(h) == 1.0
    h[..., 5:] = 0
    assert activation_utilisation(h) == 0.5
    assert activation_utilisation(torch.zeros(1, 2, 4)) == 0.0


def test_grow_depth_in_the_middle_stage_of_a_pipeline_keeps_its_output() -> None:
    model = _trained_model(ModelArchitecture.tiny(), steps=2)
    stage = ModelShard(model.architecture, 1, 3, with_embedding=False, with_head=False)
    stage.load_state_dict(model.state_dict(), strict=False)
    stage.eval()
    grown = grow_depth(stage, 2, position=2).eval()
    assert grown.layer_range == (1, 5)
    x = torch.randn(2, 10, 64)
    with torch.no_grad():
        assert torch.allclose(grown(x), stage(x), atol=1e-5)
    with pytest.raises(GrowthError, match="outside this shard"):
        grow_depth(stage, 1, position=0)


@settings(max_examples=8, deadline=None)
@given(extra_heads=st.integers(1, 3), extra_ffn=st.sampled_from([0, 64, 256]), depth=st.integers(1, 3),
       seed=st.integers(0, 1000))
def test_any_width_then_depth_growth_preserves_logits(extra_heads: int, extra_ffn: int, depth: int,
                                                        seed: int) -> None:
    torch.manual_seed(seed)
    arch = ModelArchitecture.tiny()
    model = ModelShard.full(arch)
    with torch.no_grad():  # move norms off 1.0 so the RMSNorm correction is really exercised
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    before = _logits(model, IDS)
    heads = arch.heads + 2 * extra_heads  # query group size is 2 in the tiny preset
    grown = grow_depth(grow_width(model, heads * arch.head_dim, arch.ffn + extra_ffn, heads), depth)
    assert torch.allclose(_logits(grown, IDS), before, atol=1e-4)
