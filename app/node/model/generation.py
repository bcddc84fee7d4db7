"""Sampling text through a chain of shards with a key/value cache (the inference mode).

Each stage keeps its own ``ShardCache``, so in the network every node caches only the keys and
values of the layers it holds, as Petals' inference sessions do. After the prompt, each new
token costs one position of compute per layer instead of re-running the whole sequence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from app.node.model.shard import ModelShard


def check_pipeline(stages: Sequence[ModelShard]) -> None:
    """Raise ValueError unless the stages form the whole model in order."""
    if not stages:
        raise ValueError("need at least one stage")
    if not stages[0].with_embedding or not stages[-1].with_head:
        raise ValueError("the first stage must hold the embedding and the last the head")
    arch = stages[0].architecture
    expected = 0
    for n, stage in enumerate(stages):
        first, last = stage.layer_range
        if stage.architecture != arch or first != expected:
            raise ValueError(f"stage {n} holds layers [{first}, {last}) of {stage.architecture}; "
                             f"expected layers from {expected} of {arch}")
        expected = last
    if expected != arch.layers:
        raise ValueError(f"the stages cover layers 0..{expected - 1} of {arch.layers}")


def sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                generator: torch.Generator | None) -> int:
    """One token from logits [vocab]: greedy at temperature 0, else nucleus sampling
    (Holtzman et al. 2019) over the smallest set of tokens whose probability reaches top_p."""
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    logits = logits.detach().float().cpu()
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass of strictly more likely tokens
        sorted_probs[before >= top_p] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def generate(stages: Sequence[ModelShard], prompt_ids: list[int], max_new_tokens: int, *,
             temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
             eos_id: int | None = None, adaptive_stop: bool = True,
             on_token: Callable[[int, int], None] | None = None) -> list[int]:
    """The new token ids (the prompt is not repeated). Stops after ``max_new_tokens``, after
    ``eos_id`` (included), or when prompt + output reach the architecture's ``max_seq``.

    INL blocks stop iterating once every token is at equilibrium unless ``adaptive_stop`` is
    False; ``inference_stats(stages)`` then tells how many steps they used. ``on_token(index,
    token)`` hears each token as soon as it is sampled."""
    check_pipeline(stages)
    arch = stages[0].architecture
    if not prompt_ids or any(not 0 <= i < arch.vocab for i in prompt_ids):
        raise ValueError(f"the prompt must be non-empty ids below {arch.vocab}")
    if len(prompt_ids) >= arch.max_seq:
        raise ValueError(f"the prompt ({len(prompt_ids)} tokens) leaves no room in max_seq {arch.max_seq}")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device = next(stages[0].parameters()).device
    caches = [stage.new_cache() for stage in stages]
    tokens = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    out: list[int] = []
    with torch.inference_mode(), contextlib.ExitStack() as settings:
        for stage in stages:
            settings.enter_context(stage.adaptive_stopping(adaptive_stop))
        while len(out) < max_new_tokens:
            h = tokens
            for stage, cache in zip(stages, caches, strict=True):
                h = stage(h, cache)
            token = sample_next(h[0, -1], temperature, top_p, generator)
            out.append(token)
            if on_token is not None:
                on_token(len(out) - 1, token)
            if token == eos_id or len(prompt_ids) + len(out) >= arch.max_seq:
                break
            tokens = torch.tensor([[token]], dtype=torch.long, device=device)
    return out


def inference_stats(stages: Sequence[ModelShard]) -> dict[str, object]:
    """Integration steps the INL blocks used at inference since their last reset (seed 003's
    ``get_inference_stats``): per layer, their mean, and the maximum an INL block may take.
    Empty for a transformer."""
    per_layer: dict[int, float] = {}
    for stage in stages:
        per_layer.update(stage.get_inference_stats())
    if not per_layer:
        return {}
    return {"mean_iterations_per_layer": per_layer,
            "mean_iterations": sum(per_layer.values()) / len(per_layer),
            "max_iterations": stages[0].architecture.inl_iterations}
