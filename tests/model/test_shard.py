"""Shards chained in one process behave exactly like the whole model."""

from __future__ import annotations

import pytest
import torch

from app.node.model.architecture import ModelArchitecture
from app.node.model.shard import PAD_ID, ModelShard, ShardInputError, lm_loss


def _split(model: ModelShard, bounds: list[tuple[int, int]]) -> list[ModelShard]:
    arch = model.architecture
    stages = []
    for n, (a, b) in enumerate(bounds):
        stage = ModelShard(arch, a, b, with_embedding=n == 0, with_head=n == len(bounds) - 1)
        missing, unexpected = stage.load_state_dict(model.state_dict(), strict=False)
        assert not missing
        stages.append(stage)
    return stages


def _pipeline_step(stages: list[ModelShard], ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Forward stage by stage with detached boundaries, then backward with the received grads."""
    inputs, outputs = [], []
    x: torch.Tensor = ids
    for stage in stages:
        if x.is_floating_point():
            x = x.detach().requires_grad_()
        inputs.append(x)
        x = stage(x)
        outputs.append(x)
    loss = lm_loss(outputs[-1], targets)
    loss.backward()
    for n in range(len(stages) - 2, -1, -1):
        outputs[n].backward(inputs[n + 1].grad)
    return loss


def test_shard_pipeline_gives_same_loss_and_gradients_as_whole_model() -> None:
    torch.manual_seed(0)
    arch = ModelArchitecture.tiny()
    whole = ModelShard.full(arch)
    stages = _split(whole, [(0, 1), (1, 2), (2, 3), (3, 4)])
    ids = torch.randint(0, arch.vocab, (2, 32))
    targets = torch.randint(0, arch.vocab, (2, 32))
    targets[0, :5] = PAD_ID
    loss = lm_loss(whole(ids), targets)
    loss.backward()
    pipe_loss = _pipeline_step(stages, ids, targets)
    assert torch.allclose(loss, pipe_loss, atol=1e-5)
    whole_grads = {k: p.grad for k, p in whole.named_parameters()}
    seen = 0
    for stage in stages:
        for name, p in stage.named_parameters():
            assert torch.allclose(p.grad, whole_grads[name], atol=1e-5), name
            seen += 1
    assert seen == len(whole_grads)


def test_layer_state_dict_uses_global_index_and_round_trips() -> None:
    arch = ModelArchitecture.tiny()
    worker = ModelShard(arch, 2, 4, with_embedding=False, with_head=False)
    other = ModelShard(arch, 2, 4, with_embedding=False, with_head=False)
    assert worker.layer_range == (2, 4)
    assert all(k.startswith(("blocks.2.", "blocks.3.")) for k in worker.state_dict())
    other.load_layer_state_dict(3, worker.layer_state_dict(3))
    x = torch.randn(1, 8, arch.hidden)
    assert torch.equal(other.block(3)(x, worker.rope_cos[:8], worker.rope_sin[:8]),
                       worker.block(3)(x, worker.rope_cos[:8], worker.rope_sin[:8]))
    with pytest.raises(KeyError, match="not in this shard"):
        worker.layer_state_dict(1)


def test_load_layer_state_dict_rejects_wrong_shape_with_reason() -> None:
    arch = ModelArchitecture.tiny()
    shard = ModelShard(arch, 0, 1, with_embedding=False, with_head=False)
    bad = shard.layer_state_dict(0)
    bad["attn.q_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="q_proj.weight must have shape"):
        shard.load_layer_state_dict(0, bad)
    with pytest.raises(ValueError, match="expected keys"):
        shard.load_layer_state_dict(0, {"x": torch.zeros(1)})


def test_shard_rejects_wrong_input_kind_and_too_long_sequences() -> None:
    arch = ModelArchitecture.tiny()
    first = ModelShard(arch, 0, 2, with_embedding=True, with_head=False)
    middle = ModelShard(arch, 2, 3, with_embedding=False, with_head=False)
    with pytest.raises(ShardInputError, match="token ids"):
        first(torch.randn(1, 4, arch.hidden))
    with pytest.raises(ShardInputError, match="hidden states"):
        middle(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ShardInputError, match="max_seq"):
        first(torch.zeros(1, arch.max_seq + 1, dtype=torch.long))


def test_tied_embeddings_share_one_matrix_and_refuse_split_shards() -> None:
    arch = ModelArchitecture.tiny().with_changes(tie_embeddings=True)
    whole = ModelShard.full(arch)
    assert whole.head.out.weight is whole.embedding.table.weight
    assert sum(p.numel() for p in whole.parameters()) == arch.param_count()
    with pytest.raises(ValueError, match="same shard"):
        ModelShard(arch, 0, 2, with_embedding=True, with_head=False)


def test_param_count_matches_modules() -> None:
    arch = ModelArchitecture.tiny()
    whole = ModelShard.full(arch)
    assert sum(p.numel() for p in whole.parameters()) == arch.param_count()
    block_params = sum(p.numel() for p in whole.block(0).parameters())
    assert block_params == arch.layer_param_count()


def test_low_rank_model_trains_and_has_fewer_embedding_params() -> None:
    torch.manual_seed(2)
    arch = ModelArchitecture.tiny().with_changes(vocab=2048)
    full = ModelShard.full(arch)
    low = ModelShard.full(arch, low_rank=16)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(low) < count(full)
    ids = torch.randint(0, 2048, (4, 16))
    opt = torch.optim.AdamW(low.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = lm_loss(low(ids[:, :-1]), ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_lm_loss_ignores_pad_targets() -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, 6, 266)
    targets = torch.randint(0, 256, (2, 6))
    padded = targets.clone()
    padded[1, 3:] = PAD_ID
    keep = padded != PAD_ID
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    assert torch.allclose(lm_loss(logits, padded), expected)


@pytest.mark.parametrize("block_type", ["transformer", "inl"])
def test_architecture_embedding_rank_builds_low_rank_ends_that_split_like_the_whole(block_type: str) -> None:
    torch.manual_seed(4)
    arch = ModelArchitecture.tiny().with_changes(vocab=2048, embedding_rank=16, block_type=block_type)
    whole = ModelShard.full(arch)
    assert whole.embedding.proj is not None and whole.head.down is not None
    assert sum(p.numel() for p in whole.parameters()) == arch.param_count()
    assert arch.param_count() < arch.with_changes(embedding_rank=0).param_count()
    stages = _split(whole, [(0, 2), (2, 4)])
    ids = torch.randint(0, arch.vocab, (2, 12))
    with torch.no_grad():
        assert torch.allclose(stages[1](stages[0](ids)), whole(ids), atol=1e-5)
    assert ModelArchitecture.from_dict(arch.to_dict()) == arch
    with pytest.raises(ValueError, match="embedding_rank"):
        arch.with_changes(embedding_rank=arch.hidden)
