"""Architecture upgrades on one node: what it means here, backup, growth, rollback (DESIGN.md §8).

An upgrade is a signed record (training/upgrade.py): the new shape and the growth plan from the
current one. This module turns it into what it means for this computer (``node_impact``: the
layers it holds after growth, the memory and disk that takes, whether it still fits).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from app.node.model.architecture import BYTES_PER_TRAINED_PARAM, ModelArchitecture
from app.node.training.upgrade import GrowthPlan, UpgradeRecord, parse_upgrade

MIGRATION_DIR = "migration"
PENDING_FILE = "pending-upgrade.json"

CHECKPOINT_BYTES_PER_PARAM = 4 + 8 + 8
"""What one parameter costs in a training checkpoint (float32): weights 4, AdamW moments 8,
DiLoCo anchor and outer momentum 8 (training/checkpointing.py)."""


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_pending(data_dir: Path, record: UpgradeRecord) -> Path:
    """Keep the upgrade this node heard of, so a migration can run offline (``main.py migrate``)."""
    path = Path(data_dir) / MIGRATION_DIR / PENDING_FILE
    _write_atomic(path, record.to_bytes())
    return path


def load_pending(data_dir: Path) -> UpgradeRecord | None:
    """The upgrade waiting in the data dir, verified again (the file may have been edited)."""
    path = Path(data_dir) / MIGRATION_DIR / PENDING_FILE
    return parse_upgrade(path.read_bytes()) if path.exists() else None


@dataclass(frozen=True)
class NodeImpact:
    """What an upgrade means for one node holding ``layers_before`` of the current model."""

    layers_before: tuple[int, int]
    layers_after: tuple[int, int]
    with_embedding: bool
    with_head: bool
    parameters_before: int
    parameters_after: int
    memory_needed_bytes: int
    memory_budget_bytes: int
    checkpoint_bytes_after: int

    @property
    def fits(self) -> bool:
        return self.memory_budget_bytes <= 0 or self.memory_needed_bytes <= self.memory_budget_bytes


def layers_after(plan: GrowthPlan, layer_range: tuple[int, int]) -> tuple[int, int]:
    """The range a shard holds once grown: its blocks renumbered, and the inserted identity blocks
    when it holds the insertion point (``first <= insert_at < last``, so exactly one shard does)."""
    first, last = layer_range
    if plan.inserted and first <= plan.insert_at < last:
        return first, last + plan.inserted
    return plan.new_index(first), plan.new_index(last - 1) + 1


def _shard_params(arch: ModelArchitecture, layers: int, with_embedding: bool, with_head: bool) -> int:
    return (layers * arch.layer_param_count() + (arch.embedding_param_count() if with_embedding else 0)
            + (arch.head_param_count() if with_head else 0))


def node_impact(plan: GrowthPlan, layer_range: tuple[int, int], *, with_embedding: bool, with_head: bool,
                memory_budget_bytes: int) -> NodeImpact:
    after = layers_after(plan, layer_range)
    before_params = _shard_params(plan.source, layer_range[1] - layer_range[0], with_embedding, with_head)
    after_params = _shard_params(plan.target, after[1] - after[0], with_embedding, with_head)
    return NodeImpact(layer_range, after, with_embedding, with_head, before_params, after_params,
                      after_params * BYTES_PER_TRAINED_PARAM, memory_budget_bytes,
                      after_params * CHECKPOINT_BYTES_PER_PARAM)
