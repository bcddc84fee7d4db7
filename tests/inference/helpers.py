"""Shared set-up for inference tests: the tiny model's genesis stages and their reference output."""

from __future__ import annotations

from app.node.model.architecture import ModelArchitecture
from app.node.model.generation import generate
from app.node.model.shard import ModelShard
from app.node.training.stage import build_shard

ARCH = ModelArchitecture.tiny()
SEED = 7
RANGES = [(0, 1), (1, 3), (3, 4)]
PROMPT = [257, 104, 101, 108, 108, 111, 32]


def genesis_stage(layer_range: tuple[int, int]) -> ModelShard:
    """The stage every node builds for ``layer_range`` (weights seeded by global layer)."""
    return build_shard(ARCH, layer_range, with_embedding=layer_range[0] == 0,
                       with_head=layer_range[1] == ARCH.layers, seed=SEED)


def reference_tokens(max_new_tokens: int, prompt: list[int] = PROMPT) -> list[int]:
    """In-process greedy generation (model/generation.py) with the same weights."""
    return generate([genesis_stage(r) for r in RANGES], prompt, max_new_tokens, temperature=0)
