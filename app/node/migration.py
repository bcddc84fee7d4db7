"""Architecture upgrades on one node: what it means here, backup, growth, rollback (DESIGN.md §8).

An upgrade is a signed record (training/upgrade.py): the new shape and the growth plan from the
current one. This module turns it into what it means for this computer (``node_impact``: the
layers it holds after growth, the memory and disk that takes, whether it still fits), the dry
run (``dry_run``) and the migration itself (``apply``):

1. a journal (``migration/journal.json``) is written before anything changes;
2. the checkpoints (and the adopted architecture, the run summary) are copied to
   ``migration/backup-v<old version>/``;
3. the checkpoint's layers are grown with model/growth.py (function-preserving), AdamW and
   DiLoCo state extended consistently (``grow_training_state``), optionally distilled from the
   frozen old model, and saved with the new architecture;
4. the upgrade record is adopted (``migration/architecture.json``: the node starts on it);
5. the journal is removed. The ledger is kept unless ``reset_ledger`` (moved into the backup).

A migration killed or failing before step 5 is rolled back by ``recover`` at the next start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.node.model.architecture import BYTES_PER_TRAINED_PARAM, ModelArchitecture
from app.node.model.checkpoint import load_checkpoint, save_checkpoint
from app.node.model.growth import grow_depth, grow_width
from app.node.model.shard import ModelShard, lm_loss
from app.node.training.checkpointing import ResumePoint, checkpoint_path, read_resume_point
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


# -- the dry run ------------------------------------------------------------------------------------------
ASSUMED_DISK_BYTES_PER_S = 100 * 1024**2
"""The time estimate assumes the data dir writes 100 MB/s (a slow SSD or a fast disk; the estimate
says so); growth itself is a copy of the tensors, so the bytes written dominate."""
GROWTH_SEED = 0x5EED
"""Growth draws fresh random weights for new heads and FFN channels; the weights and the DiLoCo
anchor are grown from the same seed so they agree wherever growth added something."""


class MigrationError(RuntimeError):
    """A migration cannot run here (no upgrade, no room, a mismatched checkpoint); nothing changed."""


@dataclass(frozen=True)
class MigrationPlan:
    """What ``apply`` would do on this data dir: the upgrade, this node's share and the cost."""

    record: UpgradeRecord
    impact: NodeImpact | None  # None when the node holds no checkpoint yet (nothing to grow)
    checkpoint_bytes: int  # what the backup copies
    disk_needed_bytes: int
    disk_free_bytes: int
    backup_dir: Path

    @property
    def estimated_seconds(self) -> float:
        written = self.checkpoint_bytes + (self.impact.checkpoint_bytes_after if self.impact else 0)
        return round(written / ASSUMED_DISK_BYTES_PER_S, 1)

    def to_dict(self) -> dict[str, Any]:
        plan, impact = self.record.plan, self.impact
        mine: dict[str, Any] | None = None
        if impact is not None:
            mine = {"layers_before": list(impact.layers_before), "layers_after": list(impact.layers_after),
                    "with_embedding": impact.with_embedding, "with_head": impact.with_head,
                    "parameters_before": impact.parameters_before, "parameters_after": impact.parameters_after,
                    "memory_needed_bytes": impact.memory_needed_bytes,
                    "memory_budget_bytes": impact.memory_budget_bytes, "fits": impact.fits}
        return {"from": _shape(plan.source), "to": _shape(plan.target), "growth": plan.to_dict(),
                "decided_at_nodes": self.record.nodes, "this_node": mine,
                "disk": {"backup_bytes": self.checkpoint_bytes, "needed_bytes": self.disk_needed_bytes,
                         "free_bytes": self.disk_free_bytes, "enough": self.disk_free_bytes >= self.disk_needed_bytes},
                "backup_dir": str(self.backup_dir),
                "estimated_seconds": self.estimated_seconds,
                "estimate_assumes": f"{ASSUMED_DISK_BYTES_PER_S // 1024**2} MB/s disk writes"}


def _shape(arch: ModelArchitecture) -> dict[str, Any]:
    return {"version": arch.version, "layers": arch.layers, "hidden": arch.hidden, "heads": arch.heads,
            "kv_heads": arch.kv_heads, "ffn": arch.ffn, "vocab": arch.vocab, "parameters": arch.param_count()}


def _checkpoint_files(data_dir: Path) -> list[Path]:
    folder = checkpoint_path(data_dir).parent
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def dry_run(data_dir: Path, *, memory_budget_bytes: int = 0, record: UpgradeRecord | None = None) -> MigrationPlan:
    """The migration this data dir would go through, computed without changing anything."""
    data_dir = Path(data_dir)
    record = record or load_pending(data_dir)
    if record is None:
        raise MigrationError(f"no architecture upgrade is waiting in {data_dir} (a node saves one when the "
                             "network publishes it)")
    point = read_resume_point(data_dir)
    impact = None
    if point is not None:
        _check_base(point.arch, record)
        impact = node_impact(record.plan, point.layer_range, with_embedding=point.with_embedding,
                             with_head=point.with_head, memory_budget_bytes=memory_budget_bytes)
    backup = sum(p.stat().st_size for p in _checkpoint_files(data_dir))
    after = impact.checkpoint_bytes_after if impact else 0
    # the backup, the grown checkpoint and the copy it rotates into .prev stay side by side
    need = backup + 2 * after
    return MigrationPlan(record, impact, backup, need, _free_bytes(data_dir),
                         data_dir / MIGRATION_DIR / f"backup-v{record.plan.source.version}")


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def _check_base(arch: ModelArchitecture, record: UpgradeRecord) -> None:
    if arch.with_changes(version=1) != record.plan.source.with_changes(version=1):
        raise MigrationError(f"this node's checkpoint is architecture version {arch.version} "
                             f"({arch.layers} × {arch.hidden}), not the version {record.plan.source.version} "
                             "the upgrade grows from; let the node catch up with the network first")


# -- growing one node's checkpoint ----------------------------------------------------------------------
def grow_shard(shard: ModelShard, plan: GrowthPlan) -> ModelShard:
    """``shard`` (of ``plan.source``) grown to ``plan.target`` with model/growth.py: widened so its
    outputs are unchanged, identity blocks inserted when it holds the insertion point, blocks
    renumbered otherwise. Deterministic under ``torch.manual_seed``."""
    first, last = shard.layer_range
    grown = shard
    if plan.widens:
        grown = grow_width(grown, plan.target.hidden, plan.target.ffn, plan.target.heads)
    holds_insertion = plan.inserted > 0 and first <= plan.insert_at < last
    if holds_insertion:
        grown = grow_depth(grown, plan.inserted, plan.insert_at)
    new_first, new_last = layers_after(plan, (first, last))
    final = ModelShard(plan.target, new_first, new_last, with_embedding=shard.with_embedding,
                       with_head=shard.with_head)
    state = grown.state_dict()
    if not holds_insertion:
        state = {_renumber(k, plan): v for k, v in state.items()}
    final.load_state_dict(state)
    return final.train(shard.training)


def _renumber(name: str, plan: GrowthPlan) -> str:
    parts = name.split(".")
    if parts[0] == "blocks":
        parts[1] = str(plan.new_index(int(parts[1])))
    return ".".join(parts)


def _old_name(name: str, plan: GrowthPlan, inserted: range) -> str | None:
    """The parameter of the old shard a grown parameter continues, None for an inserted block."""
    parts = name.split(".")
    if parts[0] != "blocks":
        return name
    index = int(parts[1])
    if index in inserted:
        return None
    parts[1] = str(index if index < plan.insert_at else index - plan.inserted)
    return ".".join(parts)


def _corner(new_shape: torch.Size, old: torch.Tensor) -> torch.Tensor:
    """``old`` in the leading corner of zeros: where growth put the old coordinates (growth.py)."""
    out = torch.zeros(new_shape, dtype=old.dtype)
    out[tuple(slice(0, s) for s in old.shape)] = old
    return out


def grow_training_state(state: dict[str, torch.Tensor], plan: GrowthPlan, layer_range: tuple[int, int], *,
                        with_embedding: bool, with_head: bool) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors (``model.*``, ``optim.<i>.*``, ``diloco.*``) grown consistently.

    Weights: ``grow_shard``. AdamW moments and step: carried over for the old coordinates, zero
    for new ones; an inserted block starts with no optimiser state (a fresh AdamW). DiLoCo: the
    anchor is grown like the weights (same seed) so the pseudo-gradient, anchor − weights, is the
    old one on old coordinates and exactly zero wherever growth added something; the outer
    momentum is carried like the moments."""
    old = ModelShard(plan.source, *layer_range, with_embedding=with_embedding, with_head=with_head)
    old.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    torch.manual_seed(GROWTH_SEED)
    grown = grow_shard(old, plan)
    old_params = [n for n, p in old.named_parameters() if p.requires_grad]
    old_index = {n: i for i, n in enumerate(old_params)}
    new_params = [(n, p) for n, p in grown.named_parameters() if p.requires_grad]
    out = {f"model.{k}": v.detach().clone() for k, v in grown.state_dict().items()}
    first = layer_range[0]
    inserted = range(plan.insert_at, plan.insert_at + plan.inserted) if (
        plan.inserted and first <= plan.insert_at < layer_range[1]) else range(0)
    anchor = _grown_anchor(state, old, old_params, plan)
    for i, (name, param) in enumerate(new_params):
        source = _old_name(name, plan, inserted)
        if source is None:
            if anchor is not None:
                out[f"diloco.anchor.{name}"] = param.detach().clone()
                out[f"diloco.momentum.{name}"] = torch.zeros_like(param)
            continue
        j = old_index[source]
        if f"optim.{j}.step" in state:
            out[f"optim.{i}.step"] = state[f"optim.{j}.step"].clone()
            for key in ("exp_avg", "exp_avg_sq"):
                out[f"optim.{i}.{key}"] = _corner(param.shape, state[f"optim.{j}.{key}"])
        if anchor is not None:
            out[f"diloco.anchor.{name}"] = anchor[name].clone()
            out[f"diloco.momentum.{name}"] = _corner(param.shape, state[f"diloco.momentum.{source}"])
    return out


def _grown_anchor(state: dict[str, torch.Tensor], old: ModelShard, old_params: list[str],
                  plan: GrowthPlan) -> dict[str, torch.Tensor] | None:
    if not any(k.startswith("diloco.anchor.") for k in state):
        return None
    anchor_shard = ModelShard(plan.source, *old.layer_range, with_embedding=old.with_embedding,
                              with_head=old.with_head)
    weights = old.state_dict()
    weights.update({n: state[f"diloco.anchor.{n}"] for n in old_params})
    anchor_shard.load_state_dict(weights)
    torch.manual_seed(GROWTH_SEED)
    return dict(grow_shard(anchor_shard, plan).state_dict())


# -- apply, with a backup and a journal -------------------------------------------------------------------
JOURNAL_FILE = "journal.json"
ADOPTED_FILE = "architecture.json"
LEDGER_FILE = "ledger.sqlite"
PHASES = ("backup", "grow", "distil", "save", "adopt", "done")
RESULT_PREFIX = "migrated-v"


@dataclass(frozen=True)
class MigrationResult:
    version_before: int
    version_after: int
    parameters_before: int
    parameters_after: int
    layers_after: tuple[int, int] | None
    backup_dir: Path
    ledger_reset: bool
    distill_steps: int
    fresh: bool = False  # the new version starts from fresh weights (old checkpoints in the backup)
    loss_before: float | None = None  # held-out loss of the whole model (whole-model nodes only)
    loss_after: float | None = None
    grown_digest: str | None = None  # model_digest of the grown weights this node adopted

    def to_dict(self) -> dict[str, Any]:
        return {"version_before": self.version_before, "version_after": self.version_after,
                "parameters_before": self.parameters_before, "parameters_after": self.parameters_after,
                "layers_after": list(self.layers_after) if self.layers_after else None,
                "backup_dir": str(self.backup_dir), "ledger_reset": self.ledger_reset,
                "distill_steps": self.distill_steps, "fresh": self.fresh,
                "held_out_loss_before": self.loss_before, "held_out_loss_after": self.loss_after,
                "grown_digest": self.grown_digest}


Progress = Callable[[str, float, str], None]


def _journal(data_dir: Path) -> Path:
    return data_dir / MIGRATION_DIR / JOURNAL_FILE


def _write_journal(data_dir: Path, **state: Any) -> None:
    _write_atomic(_journal(data_dir), json.dumps(state, sort_keys=True).encode())


def apply(data_dir: Path, *, memory_budget_bytes: int = 0, reset_ledger: bool = False, distill_steps: int = 0,
          fresh: bool = False, progress: Progress | None = None) -> MigrationResult:
    """Migrate this data dir to the waiting upgrade. A journal is written before anything changes;
    a migration that stops before its end is rolled back by ``recover`` at the next start.
    ``fresh``: seed 000's reset instead of growth: the node adopts the new version and starts its
    layers from the genesis weights (the trained checkpoints stay in the backup)."""
    data_dir = Path(data_dir)
    report = progress or (lambda _phase, _fraction, _message: None)
    plan = dry_run(data_dir, memory_budget_bytes=memory_budget_bytes)
    if plan.disk_free_bytes < plan.disk_needed_bytes:
        raise MigrationError(f"the migration needs {plan.disk_needed_bytes / 1e6:.0f} MB free in {data_dir}, "
                             f"there are {plan.disk_free_bytes / 1e6:.0f} MB; nothing was changed")
    if distill_steps and (plan.impact is None or plan.impact.layers_before != (0, plan.record.plan.source.layers)):
        raise MigrationError("distillation needs the whole model on this node (it compares the old and new "
                             "model's outputs); migrate without --distill-steps")
    backup = plan.backup_dir
    _write_journal(data_dir, state="backup", backup=str(backup), to_version=plan.record.target.version)
    report("backup", 0.0, f"backing up checkpoints to {backup}")
    _backup(data_dir, backup)
    _write_journal(data_dir, state="grow", backup=str(backup), to_version=plan.record.target.version)
    report("grow", 0.3, "growing this node's layers")
    point = read_resume_point(data_dir)
    layers, losses, digest = None, (None, None), None
    if point is not None and fresh:
        for path in _checkpoint_files(data_dir):
            path.unlink()  # copied into the backup above
    elif point is not None:
        layers, losses, digest = _grow_checkpoint(data_dir, point, plan.record, distill_steps, report)
    report("adopt", 0.9, f"adopting architecture version {plan.record.target.version}")
    _write_atomic(data_dir / MIGRATION_DIR / ADOPTED_FILE, plan.record.to_bytes())
    if reset_ledger:
        ledger = data_dir / LEDGER_FILE
        if ledger.exists():
            os.replace(ledger, backup / LEDGER_FILE)  # kept in the backup, never deleted
    _write_journal(data_dir, state="done", backup=str(backup), to_version=plan.record.target.version)
    (data_dir / MIGRATION_DIR / PENDING_FILE).unlink(missing_ok=True)
    _journal(data_dir).unlink(missing_ok=True)
    report("done", 1.0, f"now on architecture version {plan.record.target.version}")
    source, target = plan.record.plan.source, plan.record.target
    result = MigrationResult(source.version, target.version, source.param_count(), target.param_count(), layers,
                             backup, reset_ledger, distill_steps, fresh, *losses, grown_digest=digest)
    # what this migration did, kept beside the backup (a devnet reads it to check what each node adopted)
    _write_atomic(data_dir / MIGRATION_DIR / f"{RESULT_PREFIX}{target.version}.json",
                  json.dumps(result.to_dict(), sort_keys=True).encode())
    return result


def model_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a checkpoint's model tensors (``model.*``: names, shapes and bytes, sorted)."""
    digest = hashlib.sha256()
    for name in sorted(k for k in state if k.startswith("model.")):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def read_result(data_dir: Path, version: int) -> dict[str, Any] | None:
    """What the migration to ``version`` recorded on this data dir (``apply``), None if it never ran."""
    path = Path(data_dir) / MIGRATION_DIR / f"{RESULT_PREFIX}{version}.json"
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _backup(data_dir: Path, backup: Path) -> None:
    if backup.exists():
        shutil.rmtree(backup)
    (backup / "checkpoints").mkdir(parents=True)
    for path in _checkpoint_files(data_dir):
        shutil.copy2(path, backup / "checkpoints" / path.name)
    for name in (ADOPTED_FILE,):
        if (data_dir / MIGRATION_DIR / name).exists():
            shutil.copy2(data_dir / MIGRATION_DIR / name, backup / name)
    if (data_dir / "run_summary.json").exists():
        shutil.copy2(data_dir / "run_summary.json", backup / "run_summary.json")
    for path in backup.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def _grow_checkpoint(data_dir: Path, point: ResumePoint, record: UpgradeRecord, distill_steps: int,
                     report: Progress) -> tuple[tuple[int, int], tuple[float | None, float | None], str]:
    checkpoint = load_checkpoint(point.path)
    plan = record.plan
    state = grow_training_state(checkpoint.state, plan, point.layer_range, with_embedding=point.with_embedding,
                                with_head=point.with_head)
    if distill_steps:
        report("distil", 0.5, f"distilling the old model into the new one ({distill_steps} steps)")
        state = distil(checkpoint.state, state, plan, distill_steps, data_dir)
    losses: tuple[float | None, float | None] = (None, None)
    if point.layer_range == (0, plan.source.layers) and point.with_embedding and point.with_head:
        losses = (held_out_loss(plan.source, checkpoint.state, data_dir), held_out_loss(plan.target, state, data_dir))
    report("save", 0.7, "writing the grown checkpoint")
    after = layers_after(plan, point.layer_range)
    counters = dict(point.counters)
    counters["layer_range"] = list(after)
    extra = dict(checkpoint.extra)
    extra["training"] = json.dumps(counters)
    save_checkpoint(point.path, state, plan.target, tokenizer_hash=checkpoint.tokenizer_hash, extra=extra)
    return after, losses, model_digest(state)


def recover(data_dir: Path) -> str | None:
    """Roll back a migration that stopped midway (killed, crashed, disk full): the backup's
    checkpoints and architecture go back in place. Returns what was done, None if nothing was."""
    data_dir = Path(data_dir)
    journal = _journal(data_dir)
    if not journal.exists():
        return None
    try:
        state = json.loads(journal.read_bytes())
        phase, backup = state["state"], Path(state["backup"])
    except (ValueError, KeyError, TypeError):
        phase, backup = "backup", None
    if phase == "done":
        journal.unlink()
        return None
    if phase != "backup" and backup is not None and (backup / "checkpoints").is_dir():
        folder = checkpoint_path(data_dir).parent
        for path in _checkpoint_files(data_dir):
            path.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted((backup / "checkpoints").iterdir()):
            shutil.copy2(path, folder / path.name)
        adopted = data_dir / MIGRATION_DIR / ADOPTED_FILE
        if (backup / ADOPTED_FILE).exists():
            shutil.copy2(backup / ADOPTED_FILE, adopted)
        else:
            adopted.unlink(missing_ok=True)
        if (backup / LEDGER_FILE).exists() and not (data_dir / LEDGER_FILE).exists():
            os.replace(backup / LEDGER_FILE, data_dir / LEDGER_FILE)
    journal.unlink()
    return (f"a migration to architecture version {state.get('to_version', '?')} stopped before it finished; "
            f"this node is back on its previous version with its checkpoints restored from {backup}")


def adopted_nodes(data_dir: Path) -> int:
    """The node count at which this node's architecture was decided (its upgrade record's; 1 for
    genesis): the layer pool counts the next recalculation from there."""
    path = Path(data_dir) / MIGRATION_DIR / ADOPTED_FILE
    return parse_upgrade(path.read_bytes()).nodes if path.exists() else 1


def adopted_architecture(data_dir: Path, configured: ModelArchitecture) -> ModelArchitecture:
    """The architecture this node migrated to, or ``configured`` when it never migrated. The
    vocabulary stays the configured one: the vocabulary service applies the voted size on top."""
    path = Path(data_dir) / MIGRATION_DIR / ADOPTED_FILE
    if not path.exists():
        return configured
    return parse_upgrade(path.read_bytes()).target.with_changes(vocab=configured.vocab)


# -- distillation (seed 000 phase 2) -------------------------------------------------------------------------
DISTILL_LR = 1e-4
DISTILL_BATCH = 4
DISTILL_SEQ = 64
HELD_OUT_SEED = 0xE7A1
"""The held-out batch: a fixed draw from the bundled genesis corpus, the same before and after."""


def _whole(arch: ModelArchitecture, state: dict[str, torch.Tensor]) -> ModelShard:
    model = ModelShard(arch, 0, arch.layers, with_embedding=True, with_head=True)
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    return model


def _genesis_loader(data_dir: Path, seq_len: int, seed: int) -> Any:
    from app.node.data.bundled import load_bundled_manifest, open_bundled_store
    from app.node.data.loader import BatchLoader

    return BatchLoader(open_bundled_store(data_dir), load_bundled_manifest(), batch_size=DISTILL_BATCH,
                       seq_len=seq_len, seed=seed)


def held_out_loss(arch: ModelArchitecture, state: dict[str, torch.Tensor], data_dir: Path) -> float:
    """Next-token loss of a whole model on the fixed held-out batch."""
    inputs, targets = _genesis_loader(data_dir, min(DISTILL_SEQ, arch.max_seq), HELD_OUT_SEED).next_batch()
    with torch.no_grad():
        return float(lm_loss(_whole(arch, state).eval()(inputs), targets))


def distil(old_state: dict[str, torch.Tensor], grown_state: dict[str, torch.Tensor], plan: GrowthPlan,
           steps: int, data_dir: Path, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Train the grown model to match the frozen old one on genesis data for ``steps`` steps
    (KL divergence between their next-token distributions). Whole models only: the logits exist
    only where the whole model is. Returns ``grown_state`` with the distilled weights."""
    teacher = _whole(plan.source, old_state).eval().requires_grad_(False)
    student = _whole(plan.target, grown_state).train()
    loader = _genesis_loader(data_dir, min(DISTILL_SEQ, plan.source.max_seq), seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=DISTILL_LR, weight_decay=0.0)
    for _ in range(steps):
        inputs, _targets = loader.next_batch()
        with torch.no_grad():
            target = torch.log_softmax(teacher(inputs), dim=-1)
        loss = torch.nn.functional.kl_div(torch.log_softmax(student(inputs), dim=-1), target,
                                          log_target=True, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    out = dict(grown_state)
    out.update({f"model.{k}": v.detach().clone() for k, v in student.state_dict().items()})
    return out
