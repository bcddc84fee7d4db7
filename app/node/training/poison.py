"""Devnet fault injection: a replica that sends a poisoned DiLoCo pseudo-gradient.

``training.fault_poison_scale`` > 0 makes a node's StageSync send, instead of its honest
pseudo-gradient, the one it would send had its weights been pushed by Gaussian noise of that
standard deviation before the round closed (the attack of tests/training/test_poisoned_replica.py).
The node still trains honestly; only what it contributes to each outer step is poisoned, so the
devnet can show that held-out scoring (scoring.py) keeps the honest replica's weights where a
clean run puts them. The noise is seeded by the round, so a rerun poisons the same way.
"""

from __future__ import annotations

import torch

POISON_SEED = 0x5EED


def poisoned(pseudo_gradient: dict[str, torch.Tensor], scale: float, round_number: int) -> dict[str, torch.Tensor]:
    """``pseudo_gradient`` minus noise of standard deviation ``scale`` (``anchor - (weights + noise)``)."""
    generator = torch.Generator().manual_seed(POISON_SEED + round_number)
    return {name: value - torch.randn(value.shape, generator=generator, dtype=value.dtype) * scale
            for name, value in sorted(pseudo_gradient.items())}
