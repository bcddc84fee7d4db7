"""Cached generation through shards equals recomputing the whole sequence each step."""

from __future__ import annotations

import math

import pytest
import torch

from app.node.model.architecture import ModelArchitecture
from app.node.model.generation import generate, sample_next
from app.node.model.shard import ModelShard

ARCH = ModelArchitecture.tiny()


def _whole_and_stages() -> tuple[ModelShard, list[ModelShard]]:
    torch.manual_seed(0)
    whole = ModelShard.full(ARCH).eval()
    stages = [ModelShard(ARCH, 0, 1, with_embedding=True, with_head=False),
              ModelShard(ARCH, 1, 3, with_embedding=False, with_head=False),
              ModelShard(ARCH, 3, 4, with_embedding=False, with_head=True)]
    for s in stages:
        s.load_state_dict(whole.state_dict(), strict=False)
        s.eval()
    return whole, stages


def _greedy_without_cache(model: ModelShard, prompt: list[int], n: int) -> list[int]:
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


def test_cached_greedy_generation_through_shards_matches_uncached_whole_model() -> None:
    whole, stages = _whole_and_stages()
    prompt = [257, 104, 101, 108, 108, 111]
    expected = _greedy_without_cache(whole, prompt, 20)
    assert generate(stages, prompt, 20, temperature=0) == expected
    assert generate([whole], prompt, 20, temperature=0) == expected


def test_cached_logits_match_full_forward_within_float_tolerance() -> None:
    whole, _ = _whole_and_stages()
    ids = torch.randint(0, 256, (1, 24))
    with torch.no_grad():
        full = whole(ids)
        cache = whole.new_cache()
        parts = [whole(ids[:, :10], cache), whole(ids[:, 10:17], cache)]
        parts += [whole(ids[:, i:i + 1], cache) for i in range(17, 24)]
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_sampling_is_reproducible_with_seed_and_stops_at_eos_or_max_seq() -> None:
    _, stages = _whole_and_stages()
    a = generate(stages, [257, 1, 2], 15, temperature=1.0, top_p=0.9, seed=7)
    assert a == generate(stages, [257, 1, 2], 15, temperature=1.0, top_p=0.9, seed=7)
    stop = a[3]
    b = generate(stages, [257, 1, 2], 15, temperature=1.0, top_p=0.9, seed=7, eos_id=stop)
    assert b[-1] == stop and len(b) == a.index(stop) + 1
    long = generate(stages, list(range(60)), 50, temperature=0)
    assert len(long) == ARCH.max_seq - 60


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    gen = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, 1.0, 0.7, gen) for _ in range(200)}
    assert draws == {0, 1}
    assert sample_next(logits, 0.0, 1.0, None) == 0
    with pytest.raises(ValueError):
        sample_next(logits, 1.0, 0.0, None)


def test_generate_refuses_incomplete_pipeline() -> None:
    _, stages = _whole_and_stages()
    with pytest.raises(ValueError, match="expected layers from 1"):
        generate([stages[0], stages[2]], [1, 2], 3)
    with pytest.raises(ValueError, match="first stage"):
        generate(stages[1:], [1, 2], 3)


def test_the_layer_cache_grows_geometrically_and_holds_exactly_what_was_appended() -> None:
    from app.node.model.layers import LayerCache

    cache, max_positions = LayerCache(max_positions=300), 300
    keys, values = torch.randn(1, 2, max_positions, 8), torch.randn(1, 2, max_positions, 8)
    capacities = []
    k, v = cache.extend(keys[:, :, :5], values[:, :, :5])  # a prompt, then one position per token
    for t in range(5, max_positions):
        k, v = cache.extend(keys[:, :, t:t + 1], values[:, :, t:t + 1])
        capacities.append(cache.capacity)
    assert torch.equal(k, keys) and torch.equal(v, values) and cache.length == max_positions
    assert torch.equal(cache.keys, keys)
    grown = sorted(set(capacities))
    assert grown == [16, 32, 64, 128, 256, 300]  # doubled each time, never past the model's max_seq
    assert len(grown) <= math.ceil(math.log2(max_positions))
