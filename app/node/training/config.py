"""TrainingConfig: the ``[training]`` section of NodeConfig, declared once and read through the
config schema (app/node/schema.py).

Defaults are the production numbers (DESIGN.md §4); a devnet shrinks the durations and picks the
tiny model through the same keys, so the code path is the same. A new setting is one annotated
field here (``name: Annotated[int, Ge(1)] = 4``); the file, the Settings page and ``from_dict``
then accept and check it. DiLoCo's outer-loop defaults are defined here, once, and
``training/diloco.py`` takes them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval

from app.node.schema import STRICT, ConfigError, check, parse

DEFAULT_INNER_STEPS = 500
"""H = 500 inner steps between syncs: the DiLoCo paper's main setting and seed 002's default."""

DEFAULT_OUTER_LR = 0.7
"""Outer learning rate 0.7: the DiLoCo paper's best value with Nesterov (OpenDiLoCo and
INTELLECT-1 keep it). Kept after measuring on the tiny model (benchmarks/training.py, 4 replicas,
H = 100, 10 rounds): 0.7 / 0.9 reached a lower held-out loss than 1.0 / 0.9 and than a plain
average (1.0 / 0), by 1 and 3 %."""

DEFAULT_OUTER_MOMENTUM = 0.9
"""Nesterov momentum 0.9 for the outer SGD (DiLoCo paper, §3)."""

Positive = Annotated[int, Ge(1)]
Count = Annotated[int, Ge(0)]
Seconds = Annotated[float, Gt(0)]


class TrainingConfigError(ConfigError):
    """A ``[training]`` setting is unknown or out of range; the message names it."""


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    __pydantic_config__ = STRICT
    model: Literal["genesis", "tiny"] = "genesis"
    """"genesis" (the scaler's 1-node architecture, 11 × 512) or "tiny" (tests, devnets)."""
    block_type: Literal["transformer", "inl"] = "transformer"
    """"inl": seed 003's integrator blocks (ModelArchitecture.block_type, model/inl.py)."""
    embedding_rank: Count = 0
    """0 = full embedding and head; r > 0 factorises both through rank r (seed 003's low-rank
    embeddings, ModelArchitecture.embedding_rank): a shape every node of a network must share."""
    variance_loss_weight: Annotated[float, Ge(0)] = 0.0
    """INL only: weight of seed 003's variance-weighted term (0 = off; training/inl_losses.py)."""
    cycle_schedule: Literal["off", "balanced"] = "off"
    """INL only: "balanced" runs seed 003's equilibrium-exploration cycles on that term."""
    init_seed: int = 0
    """Genesis weights are a pure function of this seed and the layer index, so nodes that build
    different slices of the model start from the same network-wide weights without a download."""
    batch_size: Positive = 8
    micro_batches: Positive = 4
    seq_len: Positive = 256
    lr: Annotated[float, Gt(0)] = 1e-4
    """Inner AdamW (original NeuroShard defaults, DESIGN.md §4): lr 1e-4, weight decay 0.1,
    1000 warm-up steps then cosine decay to 10 % over ``decay_steps``."""
    weight_decay: Annotated[float, Ge(0)] = 0.1
    warmup_steps: Count = 1000
    decay_steps: Count = 100_000
    grad_clip: Annotated[float, Gt(0)] = 1.0
    inner_steps: Positive = DEFAULT_INNER_STEPS
    """DiLoCo H: committed inner steps between outer syncs (DiLoCo paper: 500)."""
    outer_lr: Annotated[float, Gt(0)] = DEFAULT_OUTER_LR
    outer_momentum: Annotated[float, Interval(ge=0, lt=1)] = DEFAULT_OUTER_MOMENTUM
    """Outer Nesterov SGD (DiLoCo paper; see DEFAULT_OUTER_LR for why these values)."""
    compression: Literal["none", "bf16", "int8"] = "none"  # pseudo-gradients (compression.py)
    sync_timeout_s: Seconds = 120.0
    checkpoint_every: Positive = 100
    quorum_session_s: Seconds = 3600.0
    """Original NeuroShard quorum sessions: 1 h, renewed up to 4 h (DESIGN.md §4)."""
    max_layers_per_node: Count = 0
    """0 = as many as memory allows; a devnet sets it to force a multi-stage pipeline."""
    expected_nodes: Count = 0
    """A devnet knows how many nodes start together: wait for them before planning layers."""
    join_wait_s: Annotated[float, Ge(0)] = 3.0
    linger_s: Annotated[float, Ge(0)] = 2.0
    """After its last step a node keeps serving this long so peers can finish theirs."""
    takeover_wait_s: Seconds = 600.0
    """A driver whose own steps are done waits at most this long for the other drivers to finish
    or die (a dead one's remaining steps are then its to take over, runtime/takeover_service.py)."""
    max_microbatch_attempts: Positive = 4
    corpus_dir: str = ""
    """A private corpus built by ``python -m app.node.data.build`` instead of the bundled sample;
    ``genesis_public_key`` (hex, printed by the build and saved beside it) must sign its manifest."""
    genesis_public_key: str = ""
    recalc_interval_nodes: Positive = 50
    """Seed 000: the layer pool re-computes the architecture every 50 joined nodes (a devnet
    lowers it so an upgrade is reachable with a handful of nodes)."""
    max_upgrade_factor: Annotated[float, Ge(0)] = 0.0
    """0 = an upgrade takes the shape the network's memory affords (the scaler's); > 0 caps one
    upgrade at this many times the current parameters (training/upgrade.py ``capped_candidate``):
    a devnet's tiny model would otherwise jump to the hundreds of times larger shape that the
    machines' gigabytes afford."""
    upgrade_at_step: Count = 0
    """0 = recalculate only every ``recalc_interval_nodes`` joins; N > 0 (a devnet's
    ``--upgrade-at``, for tests and demos): a driver on the configured (never migrated)
    architecture forces the recalculation once it committed step N."""
    heal_interval_s: Seconds = 30.0
    """How often a node checks that every stage still has MIN_REPLICAS live holders (the original
    implementation's 30 s heartbeat; a holder counts as gone when its announcement expires)."""
    fault_poison_scale: Annotated[float, Ge(0)] = 0.0
    """Devnet fault injection (training/poison.py): > 0 sends every DiLoCo pseudo-gradient pushed
    by noise of this standard deviation, for held-out scoring to reject. 0 = honest."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> TrainingConfig:
        """The ``[training]`` section; TrainingConfigError names each bad key in one line."""
        try:
            config = parse(cls, raw or {}, prefix="training")
        except ConfigError as exc:
            raise TrainingConfigError(str(exc)) from None
        config._check_across_fields()
        return config

    def validate(self) -> None:
        """Every rule: each field's own range (its annotation) and the rules across fields."""
        try:
            check(self, prefix="training")
        except ConfigError as exc:
            raise TrainingConfigError(str(exc)) from None
        self._check_across_fields()

    def _check_across_fields(self) -> None:
        if self.batch_size % self.micro_batches:
            raise TrainingConfigError(f"training: batch_size {self.batch_size} must be a multiple of "
                                      f"micro_batches {self.micro_batches}")
        if self.embedding_rank and self.embedding_rank >= (hidden := self._base_architecture().hidden):
            raise TrainingConfigError(f"training: embedding_rank {self.embedding_rank} must be below the "
                                      f"model's hidden size {hidden} (0 = full rank)")

    def _base_architecture(self) -> Any:
        from app.node.model.architecture import ModelArchitecture

        return ModelArchitecture.tiny() if self.model == "tiny" else ModelArchitecture.genesis()

    def architecture(self) -> Any:
        return self._base_architecture().with_changes(block_type=self.block_type, embedding_rank=self.embedding_rank)
