"""Checkpoint and resume of one node's training: layers, AdamW, DiLoCo state and counters.

One safetensors file per node (``<data_dir>/checkpoints/stage.safetensors``) written through
app/node/model/checkpoint.py (temp file, fsync, rename; the previous file kept as ``.prev``).
Tensors are namespaced ``model.*``, ``optim.<i>.*`` (by parameter position, the order the
shard's parameters are created in, identical on every build) and ``diloco.*``; counters and the
data loader position go in the JSON ``extra`` metadata. A killed node restarted with the same data
dir resumes from its last committed step: nothing committed before the checkpoint is lost.

A corrupted newest checkpoint is set aside (renamed, kept) and the verified ``.prev`` resumes the
node; ``ResumePoint.set_aside`` says what was set aside so the runtime can report it. When both are
unusable ``read_resume_point`` raises ``CheckpointsUnusable`` and renames nothing:
app/node/checkpoint_recovery.py decides what happens next (a replica's weights, the volunteer's
choice, or a stop), never a silent restart from step 1.

Under a running node the data dir has a disk cap (app/node/disk.py). A checkpoint that would
take it past the cap first evicts the ``.prev`` copy (the last good checkpoint stays); if it still
does not fit, this save is skipped with a warning (training goes on from the last checkpoint
kept) rather than failing the node or leaving half a file.

Tensors are saved as CPU copies (safetensors writes CPU memory; the copy is taken under the stage
lock so training can go on while the file is written) and loaded back onto the stage's device:
a checkpoint written by a GPU node resumes on a CPU node and the other way round.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.node.disk import DiskCapExceeded, budget_for
from app.node.model.architecture import ModelArchitecture
from app.node.model.checkpoint import (
    CheckpointError,
    SetAside,
    load_checkpoint,
    load_newest_good,
    previous_path,
    save_checkpoint,
    verify_checkpoint,
)
from app.node.training.stage import StageWorker
from app.node.training.sync import StageSync

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "stage.safetensors"
_ADAM_KEYS = ("exp_avg", "exp_avg_sq")
_METADATA_ALLOWANCE = 1 << 20
"""Bytes reserved beyond the tensors for the safetensors header and JSON metadata."""
log = logging.getLogger("neuroshard.training.checkpoint")


class ResumeError(CheckpointError):
    """A checkpoint exists but does not fit this node's stage; the message says what differs."""


@dataclass(frozen=True)
class ResumePoint:
    """What a checkpoint says about where the node was (read before building the stage)."""

    layer_range: tuple[int, int]
    with_embedding: bool
    with_head: bool
    arch: ModelArchitecture
    driver_step: int
    counters: dict[str, Any]
    path: Path
    set_aside: tuple[SetAside, ...] = ()  # unusable copies renamed out of the way to get here


def checkpoint_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE


def save_training_state(data_dir: Path | str, stage: StageWorker, sync: StageSync | None, *,
                        driver_step: int, loader_state: dict[str, Any] | None = None,
                        node_id: str = "") -> Path | None:
    """Write the checkpoint; None when the disk cap left no room for it (reported, nothing written)."""
    path = checkpoint_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with stage.lock:
        state = {f"model.{k}": v.detach().to("cpu", copy=True) for k, v in stage.shard.state_dict().items()}
        state.update(_optimizer_tensors(stage))
        if sync is not None:
            state.update({f"diloco.{k}": v for k, v in sync.replica.flat_state().items()})
        counters = {
            "layer_range": list(stage.layer_range), "with_embedding": stage.is_first,
            "with_head": stage.is_last, "inner_step": stage.inner_step,
            "tokens_trained": stage.tokens_trained, "driver_step": driver_step,
            "diloco_inner": sync.replica.inner_steps_done if sync else 0,
            "diloco_outer": sync.replica.outer_steps_done if sync else 0,
            "rounds": sync.rounds if sync else 0, "loader": loader_state or {}, "node_id": node_id,
        }
    budget = budget_for(path.parent)
    if budget is None:
        _save(path, state, stage, counters)
        return path
    need = sum(t.numel() * t.element_size() for t in state.values()) + _METADATA_ALLOWANCE
    prev = previous_path(path)
    if not budget.room(need) and prev.exists() and path.exists() and verify_checkpoint(path) is None:
        prev.unlink(missing_ok=True)  # the fallback copy goes first; the newest, verified, stays
        log.info("disk cap: removed the older checkpoint copy %s to make room", prev.name)
    try:
        with budget.reserve(need, what="the training checkpoint"):
            _save(path, state, stage, counters)
    except DiskCapExceeded:
        return None  # reported by the budget; the last checkpoint on disk is still whole
    return path


def _save(path: Path, state: dict[str, torch.Tensor], stage: StageWorker, counters: dict[str, Any]) -> None:
    aside = save_checkpoint(path, state, stage.shard.architecture, extra={"training": json.dumps(counters)})
    if aside is not None:
        log.warning("the checkpoint being replaced no longer verifies (%s); it was set aside as %s and "
                    "the verified %s was kept", aside.reason, aside.now_at.name, previous_path(path).name)


def read_resume_point(data_dir: Path | str) -> ResumePoint | None:
    """The checkpoint's stage and counters, or None when there is no checkpoint yet."""
    path = checkpoint_path(data_dir)
    if not path.exists() and not previous_path(path).exists():
        return None
    loaded = load_newest_good(path)  # CheckpointsUnusable when neither copy verifies
    counters = _counters(loaded.checkpoint.extra, loaded.path)
    first, last = counters["layer_range"]
    return ResumePoint((first, last), bool(counters["with_embedding"]), bool(counters["with_head"]),
                       loaded.checkpoint.arch, int(counters["driver_step"]), counters, loaded.path,
                       loaded.set_aside)


def restore_training_state(point: ResumePoint, stage: StageWorker, sync: StageSync | None) -> None:
    """Load weights, AdamW moments and DiLoCo state into a freshly built stage."""
    checkpoint = load_checkpoint(point.path, expected_arch=stage.shard.architecture)
    if tuple(point.layer_range) != tuple(stage.layer_range):
        raise ResumeError(f"checkpoint holds layers {point.layer_range}, this stage {stage.layer_range}")
    model = {k[len("model."):]: v for k, v in checkpoint.state.items() if k.startswith("model.")}
    stage.load_weights(model)
    _load_optimizer(stage, checkpoint.state)
    stage.restore_counters(int(point.counters["inner_step"]), int(point.counters["tokens_trained"]))
    if sync is not None:
        diloco = {k[len("diloco."):]: v for k, v in checkpoint.state.items() if k.startswith("diloco.")}
        sync.restore(diloco, int(point.counters["diloco_inner"]), int(point.counters["diloco_outer"]),
                     int(point.counters["rounds"]))


def _optimizer_tensors(stage: StageWorker) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for i, p in enumerate(stage.params):
        st = stage.optimizer.state.get(p)
        if not st:
            continue
        for key in _ADAM_KEYS:
            out[f"optim.{i}.{key}"] = st[key].detach().to("cpu", copy=True)
        out[f"optim.{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).to("cpu", copy=True).reshape(1)
    return out


def _load_optimizer(stage: StageWorker, state: dict[str, torch.Tensor]) -> None:
    for i, p in enumerate(stage.params):
        if f"optim.{i}.step" not in state:
            continue
        moments = {}
        for key in _ADAM_KEYS:
            t = state.get(f"optim.{i}.{key}")
            if t is None or t.shape != p.shape:
                raise ResumeError(f"optimizer state {i}.{key} is missing or has the wrong shape")
            moments[key] = t.to(p.device, copy=True)  # the moments live with their parameter
        # the step counter stays on the CPU, as InnerAdamW creates it (read with float() each step)
        stage.optimizer.state[p] = {"step": state[f"optim.{i}.step"].reshape(()).clone(), **moments}


def _counters(extra: dict[str, str], path: Path) -> dict[str, Any]:
    try:
        counters = json.loads(extra.get("training", ""))
        first, last = counters["layer_range"]
        if not all(isinstance(v, int) and v >= 0 for v in (first, last, counters["driver_step"],
                                                            counters["inner_step"])):
            raise ValueError("negative or non-integer counters")
    except (ValueError, KeyError, TypeError) as exc:
        raise ResumeError(f"checkpoint {path} has no usable training counters ({exc}); "
                          "delete it to start this node fresh") from exc
    return counters
