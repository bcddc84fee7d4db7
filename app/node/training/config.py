"""TrainingConfig: the ``[training]`` section of NodeConfig, validated.

Defaults are the production numbers (DESIGN.md §4); a devnet shrinks the durations and picks the
tiny model through the same keys, so the code path is the same.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


class TrainingConfigError(ValueError):
    """A ``[training]`` setting is unknown or out of range; the message names it."""


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    model: str = "genesis"
    """"genesis" (the scaler's 1-node architecture, 11 × 512) or "tiny" (tests, devnets)."""
    init_seed: int = 0
    """Genesis weights are a pure function of this seed and the layer index, so nodes that build
    different slices of the model start from the same network-wide weights without a download."""
    batch_size: int = 8
    micro_batches: int = 4
    seq_len: int = 256
    lr: float = 1e-4
    """Inner AdamW (original NeuroShard defaults, DESIGN.md §4): lr 1e-4, weight decay 0.1,
    1000 warm-up steps then cosine decay to 10 % over ``decay_steps``."""
    weight_decay: float = 0.1
    warmup_steps: int = 1000
    decay_steps: int = 100_000
    grad_clip: float = 1.0
    inner_steps: int = 500
    """DiLoCo H: committed inner steps between outer syncs (DiLoCo paper: 500)."""
    outer_lr: float = 0.7
    outer_momentum: float = 0.9
    """Outer Nesterov SGD (DiLoCo paper). Kept after measuring on the tiny model (benchmarks/
    training.py, 4 replicas, H = 100, 10 rounds): 0.7 / 0.9 reached a lower held-out loss than
    1.0 / 0.9 and than a plain average (1.0 / 0), by 1 and 3 %."""
    compression: str = "none"  # none / bf16 / int8 pseudo-gradients (compression.py)
    sync_timeout_s: float = 120.0
    checkpoint_every: int = 100
    quorum_session_s: float = 3600.0
    """Original NeuroShard quorum sessions: 1 h, renewed up to 4 h (DESIGN.md §4)."""
    max_layers_per_node: int = 0
    """0 = as many as memory allows; a devnet sets it to force a multi-stage pipeline."""
    expected_nodes: int = 0
    """A devnet knows how many nodes start together: wait for them before planning layers."""
    join_wait_s: float = 3.0
    linger_s: float = 2.0
    """After its last step a node keeps serving this long so peers can finish theirs."""
    max_microbatch_attempts: int = 4
    corpus_dir: str = ""
    """A private corpus built by ``python -m app.node.data.build`` instead of the bundled sample;
    ``genesis_public_key`` (hex, printed by the build and saved beside it) must sign its manifest."""
    genesis_public_key: str = ""
    heal_interval_s: float = 30.0
    """How often a node checks that every stage still has MIN_REPLICAS live holders (the original
    implementation's 30 s heartbeat; a holder counts as gone when its announcement expires)."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> TrainingConfig:
        raw = dict(raw or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise TrainingConfigError(f"unknown [training] setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            default = getattr(cls, name)
            if isinstance(default, bool) or isinstance(value, bool):
                raise TrainingConfigError(f"[training] {name} has an unexpected type")
            if isinstance(default, float) and isinstance(value, int):
                value = float(value)
            if type(value) is not type(default):
                raise TrainingConfigError(
                    f"[training] {name} must be {type(default).__name__}, got {value!r}")
            values[name] = value
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        problems = []
        if self.model not in ("genesis", "tiny"):
            problems.append(f"model must be 'genesis' or 'tiny', got {self.model!r}")
        if self.compression not in ("none", "bf16", "int8"):
            problems.append(f"compression must be none, bf16 or int8, got {self.compression!r}")
        for name in ("batch_size", "micro_batches", "seq_len", "inner_steps", "checkpoint_every",
                     "max_microbatch_attempts"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.batch_size % self.micro_batches:
            problems.append(f"batch_size {self.batch_size} must be a multiple of micro_batches "
                            f"{self.micro_batches}")
        if not (self.lr > 0 and self.outer_lr > 0 and 0 <= self.outer_momentum < 1):
            problems.append("lr and outer_lr must be positive, outer_momentum in [0, 1)")
        if min(self.warmup_steps, self.decay_steps, self.max_layers_per_node, self.expected_nodes) < 0:
            problems.append("step counts and limits must not be negative")
        if problems:
            raise TrainingConfigError("; ".join(problems))

    def architecture(self) -> Any:
        from app.node.model.architecture import ModelArchitecture

        return ModelArchitecture.tiny() if self.model == "tiny" else ModelArchitecture.genesis()
