"""Migration of one node's data dir to a larger architecture: dry run, apply, rollback."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from app.cli import main as cli_main
from app.crypto.keys import PrivateKey
from app.node import hardware
from app.node.config import MigrationSettings, NodeConfig
from app.node.data.bundled import load_bundled_manifest, open_bundled_store
from app.node.data.loader import BatchLoader
from app.node.engine import NodeEngine
from app.node.events import ErrorOccurred, Event, LayersAssigned, StepDone
from app.node.headless import run_headless
from app.node.migration import (
    MIGRATION_DIR,
    MigrationError,
    adopted_nodes,
    apply,
    dry_run,
    recover,
    save_pending,
)
from app.node.model.architecture import ModelArchitecture
from app.node.model.checkpoint import load_checkpoint
from app.node.model.shard import ModelShard, lm_loss
from app.node.training.checkpointing import checkpoint_path
from app.node.training.upgrade import plan_upgrade, sign_upgrade

TINY = ModelArchitecture.tiny()
TRAINING = {"model": "tiny", "batch_size": 4, "micro_batches": 2, "seq_len": 32, "lr": 3e-3,
            "warmup_steps": 0, "inner_steps": 3, "checkpoint_every": 2, "linger_s": 0.0}
PLAN = plan_upgrade(TINY, TINY.with_changes(hidden=128, heads=8, kv_heads=4, ffn=512, layers=6))
ROOT = Path(__file__).resolve().parents[2]


def _config(data_dir: Path, max_steps: int) -> NodeConfig:
    report = hardware.HardwareReport(hardware.detect_device("cpu"), 20.0, hardware.tier_for_ms(20.0),
                                     torch.__version__, time.time())
    hardware.save_cache(data_dir, report)
    return NodeConfig(data_dir=data_dir, port=0, max_steps=max_steps, training=dict(TRAINING))


def _run_node(data_dir: Path, steps: int) -> list[Event]:
    events: list[Event] = []
    lock = threading.Lock()

    def record(event: Event) -> None:
        with lock:
            events.append(event)

    engine = NodeEngine(_config(data_dir, steps))
    engine.subscribe(record)
    engine.start()
    assert engine.wait(timeout=180) and engine.exit_code == 0
    return events


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A solo node's data dir after 4 steps (checkpointed), with the upgrade waiting."""
    data_dir = tmp_path_factory.mktemp("node")
    _run_node(data_dir, 4)
    assert PLAN is not None
    save_pending(data_dir, sign_upgrade(PrivateKey.generate(), PLAN, nodes=51))
    return data_dir


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", f"{src}/.", str(dst)], check=True)
    return dst


def _held_out_loss(data_dir: Path) -> tuple[int, float]:
    checkpoint = load_checkpoint(checkpoint_path(data_dir))
    arch = checkpoint.arch
    model = ModelShard(arch, 0, arch.layers, with_embedding=True, with_head=True).eval()
    model.load_state_dict({k[len("model."):]: v for k, v in checkpoint.state.items() if k.startswith("model.")})
    loader = BatchLoader(open_bundled_store(data_dir / "heldout"), load_bundled_manifest(), batch_size=8,
                         seq_len=48, seed=12345)
    inputs, targets = loader.next_batch()
    with torch.no_grad():
        return arch.version, float(lm_loss(model(inputs), targets))


def _digests(data_dir: Path) -> dict[str, str]:
    folder = checkpoint_path(data_dir).parent
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_dry_run_prints_the_plan_and_changes_nothing(trained: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = _copy(trained, tmp_path)
    before = _digests(data_dir)
    assert cli_main(["migrate", "--data-dir", str(data_dir), "--dry-run", "--memory-gb", "1"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["from"]["version"] == 1 and plan["to"]["version"] == 2
    assert (plan["from"]["layers"], plan["from"]["hidden"]) == (TINY.layers, TINY.hidden)
    assert (plan["to"]["layers"], plan["to"]["hidden"]) == (PLAN.target.layers, PLAN.target.hidden)
    assert plan["to"]["parameters"] == PLAN.target.param_count()
    mine = plan["this_node"]
    assert mine["layers_before"] == [0, TINY.layers] and mine["layers_after"] == [0, PLAN.target.layers]
    assert mine["parameters_after"] == PLAN.target.param_count() and mine["fits"] is True
    assert mine["memory_needed_bytes"] == PLAN.target.param_count() * 36
    assert plan["disk"]["backup_bytes"] == sum(p.stat().st_size for p in checkpoint_path(data_dir).parent.iterdir())
    assert plan["estimated_seconds"] >= 0 and plan["backup_dir"].endswith("backup-v1")
    assert _digests(data_dir) == before and not (data_dir / MIGRATION_DIR / "journal.json").exists()


def test_apply_keeps_held_out_loss_and_the_node_resumes_on_the_new_version(trained: Path, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = _copy(trained, tmp_path)
    version, loss_before = _held_out_loss(data_dir)
    assert version == 1
    assert cli_main(["migrate", "--data-dir", str(data_dir), "--apply"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["version_before"], result["version_after"]) == (1, 2) and result["ledger_reset"] is False
    reported = result["held_out_loss_before"], result["held_out_loss_after"]
    assert abs(reported[1] - reported[0]) <= 1e-4 * reported[0]
    version, loss_after = _held_out_loss(data_dir)
    assert version == 2
    assert abs(loss_after - loss_before) <= 1e-4 * loss_before
    assert (data_dir / "ledger.sqlite").exists()  # the ledger is kept by default
    assert adopted_nodes(data_dir) == 51  # the next recalculation counts from the record's 51 nodes
    assert (Path(result["backup_dir"]) / "checkpoints" / "stage.safetensors").exists()
    events = _run_node(data_dir, 2)  # the node starts on the grown model and goes on training
    (layers,) = [e for e in events if isinstance(e, LayersAssigned)]
    assert layers.architecture_version == 2 and layers.parameters == PLAN.target.param_count()
    assert [e.step for e in events if isinstance(e, StepDone)]


@pytest.mark.parametrize("phase", ["grow", "adopt"])
def test_a_migration_killed_midway_comes_back_on_the_old_version_at_the_next_start(trained: Path, tmp_path: Path, phase: str) -> None:
    data_dir = _copy(trained, tmp_path)
    before = _digests(data_dir)
    script = ("import os, signal, sys; from pathlib import Path; from app.node.migration import apply\n"
              "def kill(p, f, m):\n"
              f"    if p == {phase!r}: os.kill(os.getpid(), signal.SIGKILL)\n"
              "apply(Path(sys.argv[1]), progress=kill)\n")
    done = subprocess.run([sys.executable, "-c", script, str(data_dir)], cwd=ROOT, capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert (data_dir / MIGRATION_DIR / "journal.json").exists()
    events = _run_node(data_dir, 0)  # the node starts again: it rolls back, says so, and is on version 1
    assert any(isinstance(e, ErrorOccurred) and "back on its previous version" in e.message for e in events)
    (layers,) = [e for e in events if isinstance(e, LayersAssigned)]
    assert layers.architecture_version == 1
    assert _digests(data_dir) == before
    assert _held_out_loss(data_dir)[0] == 1 and not (data_dir / MIGRATION_DIR / "architecture.json").exists()
    assert recover(data_dir) is None  # nothing left to roll back


def test_a_failed_write_is_rolled_back_at_the_next_start(trained: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = _copy(trained, tmp_path)
    before = _digests(data_dir)
    from app.node import migration

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(migration, "save_checkpoint", disk_full)
    with pytest.raises(OSError):
        apply(data_dir)
    monkeypatch.undo()
    events = _run_node(data_dir, 1)  # the next start rolls back and says so
    assert any(isinstance(e, ErrorOccurred) and "back on its previous version" in e.message for e in events)
    (layers,) = [e for e in events if isinstance(e, LayersAssigned)]
    assert layers.architecture_version == 1
    assert set(_digests(data_dir)) >= set(before)


def test_reset_ledger_keeps_the_old_ledger_in_the_backup_and_no_upgrade_means_no_migration(
        trained: Path, tmp_path: Path) -> None:
    data_dir = _copy(trained, tmp_path)
    result = apply(data_dir, reset_ledger=True)
    assert not (data_dir / "ledger.sqlite").exists() and (result.backup_dir / "ledger.sqlite").exists()
    with pytest.raises(MigrationError, match="no architecture upgrade"):
        dry_run(data_dir)


def test_distillation_trains_the_grown_model_against_the_old_one(trained: Path, tmp_path: Path) -> None:
    data_dir = _copy(trained, tmp_path)
    _, loss_before = _held_out_loss(data_dir)
    result = apply(data_dir, distill_steps=3)
    assert result.distill_steps == 3
    version, loss_after = _held_out_loss(data_dir)
    assert version == 2 and abs(loss_after - loss_before) < 0.05 * loss_before


def test_a_server_with_automatic_migration_migrates_by_itself(trained: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = _copy(trained, tmp_path)  # the upgrade heard in an earlier run waits in the data dir
    config = dataclasses.replace(_config(data_dir, 2), headless=True, json_events=True,
                                 migration=MigrationSettings(automatic=True))
    assert run_headless(config) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [e["architecture_version"] for e in events if e["event"] == "layers"] == [1, 2]
    # it stops as soon as it hears of the upgrade: no step is trained on the old version
    first_run = events[:[i for i, e in enumerate(events) if e["event"] == "layers"][1]]
    assert not [e for e in first_run if e["event"] == "step"]
    assert [e["step"] for e in events if e["event"] == "step"]  # the new version trains
    assert [e["phase"] for e in events if e["event"] == "migration"][-1] == "done"
    assert _held_out_loss(data_dir)[0] == 2


def test_reset_instead_adopts_the_new_version_with_fresh_weights_and_keeps_the_old_ones(
        trained: Path, tmp_path: Path) -> None:
    data_dir = _copy(trained, tmp_path)
    before = _digests(data_dir)
    result = apply(data_dir, fresh=True)
    assert result.fresh and result.version_after == 2 and result.loss_before is None
    assert not checkpoint_path(data_dir).exists()
    assert _digests(result.backup_dir) == before  # what was learned is kept in the backup
    events = _run_node(data_dir, 1)
    (layers,) = [e for e in events if isinstance(e, LayersAssigned)]
    assert layers.architecture_version == 2 and layers.parameters == PLAN.target.param_count()
