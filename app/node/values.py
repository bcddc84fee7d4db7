"""The node's values as the window sees them: money units, speed tiers, contribution modes,
economics terms, and the wizard's estimate of what a measured machine can do.

The UI imports only this module, ``events`` (events and commands), the ``engine`` facade and the
configuration it edits (import-linter contract "The UI sees the node through events, commands
and values", pyproject.toml). Everything here comes from the light, pure-Python modules that
own each value, so there is one definition of each; nothing imported here pulls torch, grpc or
``tokenizers`` (tests/ui/test_lazy_imports.py). The genesis tokenizer loads only when a token id
must be shown, inside ``genesis_token_bytes``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from app.node.economics.constants import EconomicsConfig
from app.node.hardware import TIER_MEANING, SpeedTier
from app.node.model.architecture import ANCHOR_HIDDEN, ANCHOR_LAYERS, BYTES_PER_TRAINED_PARAM
from app.node.modes import (
    ASYNC,
    DATA,
    DESCRIPTIONS,
    INFERENCE,
    MODES,
    PIPELINE,
    UNITS_PER_NEURO,
    VERIFY,
    ModePlan,
    NodeCapabilities,
    propose_modes,
)
from app.node.training.config import TrainingConfig

__all__ = [
    "ASYNC", "DATA", "DESCRIPTIONS", "INFERENCE", "MODES", "PIPELINE", "TIER_MEANING", "UNITS_PER_NEURO",
    "VERIFY", "DEFAULT_ECONOMICS", "GENESIS_LAYER_BYTES", "ModePlan", "NodeCapabilities", "SpeedTier",
    "estimate_capabilities", "estimate_plan", "genesis_token_bytes", "TrainingSchedule", "training_schedule",
]

@dataclass(frozen=True)
class TrainingSchedule:
    """When the node shares what it learned (every ``inner_steps`` steps: one DiLoCo round) and
    when it saves a checkpoint (every ``checkpoint_every`` steps, and when it stops)."""

    inner_steps: int
    checkpoint_every: int


def training_schedule(training: Mapping[str, Any]) -> TrainingSchedule:
    """The schedule a node runs with the ``[training]`` settings ``training`` (defaults filled in)."""
    config = TrainingConfig.from_dict(dict(training))
    return TrainingSchedule(inner_steps=config.inner_steps, checkpoint_every=config.checkpoint_every)


# The economics a node runs unless its network says otherwise (devnets shorten the periods).
DEFAULT_ECONOMICS = EconomicsConfig()

# A pre-norm block holds about 12·hidden² parameters (attention 4h², SwiGLU FFN ~8h²).
GENESIS_LAYER_BYTES = 12 * ANCHOR_HIDDEN**2 * BYTES_PER_TRAINED_PARAM


def _free_disk_bytes(path: Path) -> int:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return 0


def estimate_capabilities(memory_bytes: int, tier: str, memory_fraction: float, data_dir: Path,
                          staked_units: int = 0) -> NodeCapabilities:
    """What a measured machine can do with the genesis model, before it has an assignment (the
    node decides for real once it runs, with the live architecture)."""
    layers_fit = int(memory_bytes * memory_fraction) // GENESIS_LAYER_BYTES
    return NodeCapabilities(
        tier=SpeedTier(tier), layers_fit=int(layers_fit), fits_full_model=layers_fit >= ANCHOR_LAYERS,
        free_disk_bytes=_free_disk_bytes(data_dir), staked_units=staked_units,
    )


def estimate_plan(memory_bytes: int, tier: str, memory_fraction: float, data_dir: Path) -> ModePlan:
    return propose_modes(estimate_capabilities(memory_bytes, tier, memory_fraction, data_dir))


@cache
def _genesis_tokenizer() -> Any:
    from app.node.tokenizer import NeuroTokenizer  # loads ``tokenizers``, never torch

    return NeuroTokenizer.genesis()


def genesis_token_bytes(token_id: int) -> bytes:
    """The bytes of a genesis token id (the tokenizer loads on first use)."""
    return _genesis_tokenizer().token_bytes(token_id)
