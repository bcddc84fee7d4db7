"""``devnet --poison N``: the first N nodes send poisoned DiLoCo pseudo-gradients (training/poison.py).

Held-out scoring (training/scoring.py) must reject them, so one poisoned replica of two cannot move
the honest one's weights. ``held_out_loss`` measures what that means: a node's final weights (its
checkpoint) on genesis windows drawn with a seed nobody trains or screens with, so a poisoned run
and a clean run of the same length can be compared on the same tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

POISON_SCALE = 0.5
"""Noise (standard deviation) pushed onto the poisoned replica's weights before each round: the
in-process test's attack, which raised held-out loss by about +260 % there."""
EVAL_SEED = 0x0E7A11
EVAL_BATCHES = 4


def poisoned_training(training: dict[str, Any]) -> dict[str, Any]:
    """The ``[training]`` section of a poisoned node: the same, plus the fault."""
    return {**training, "fault_poison_scale": POISON_SCALE}


def held_out_loss(data_dir: Path) -> float:
    """Mean next-token loss of the whole model in ``data_dir``'s checkpoint on the evaluation
    windows of the genesis corpus installed there (the node must hold every layer)."""
    import torch

    from app.node.data.bundled import open_bundled_store
    from app.node.data.loader import BatchLoader
    from app.node.model.checkpoint import load_checkpoint
    from app.node.model.shard import ModelShard, lm_loss
    from app.node.training.checkpointing import checkpoint_path

    checkpoint = load_checkpoint(checkpoint_path(data_dir))
    arch = checkpoint.arch
    model = ModelShard(arch, 0, arch.layers, with_embedding=True, with_head=True)
    model.load_state_dict({k[len("model."):]: v for k, v in checkpoint.state.items() if k.startswith("model.")})
    store = open_bundled_store(data_dir)
    loader = BatchLoader(store, store.manifest, batch_size=8, seq_len=min(64, arch.max_seq), seed=EVAL_SEED)
    model.eval()
    with torch.no_grad():
        losses = [float(lm_loss(model(inputs), targets)) for inputs, targets in
                  (loader.next_batch() for _ in range(EVAL_BATCHES))]
    return sum(losses) / len(losses)
