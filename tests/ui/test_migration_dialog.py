"""The migration dialog on the real runtime: Review, the dry run, Migrate now, the new version."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app.crypto.keys import PrivateKey
from app.node.config import NodeConfig
from app.node.events import LayersAssigned, UpgradeAvailable
from app.node.migration import save_pending
from app.node.model.architecture import ModelArchitecture
from app.node.training.checkpointing import checkpoint_path
from app.node.training.upgrade import plan_upgrade, sign_upgrade
from tests.ui.conftest import node_config
from tests.ui.helpers import wait_training

TINY = ModelArchitecture.tiny()
PLAN = plan_upgrade(TINY, TINY.with_changes(hidden=128, heads=8, kv_heads=4, ffn=512, layers=6))


@pytest.fixture
def config(data_dir: Path) -> NodeConfig:
    return dataclasses.replace(node_config(data_dir), training={"model": "tiny", "checkpoint_every": 2})


def test_review_shows_the_dry_run_and_migrate_now_brings_the_new_version(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    data_dir = gui.controller.config.data_dir
    qtbot.waitUntil(lambda: checkpoint_path(data_dir).exists(), timeout=120_000)
    assert PLAN is not None
    # what the network's UpgradeService does on hearing the record: keep it, announce it
    save_pending(data_dir, sign_upgrade(PrivateKey.generate(), PLAN, nodes=51))
    gui.controller.engine.emit(UpgradeAvailable(
        current_version=1, candidate_version=2, current_parameters=TINY.param_count(),
        candidate_parameters=PLAN.target.param_count()))
    banner = gui.window.upgrade_banner
    qtbot.waitUntil(banner.isVisible, timeout=5_000)
    banner.button.click()  # "Review"
    dialog = gui.migration
    assert dialog is not None
    qtbot.waitUntil(lambda: dialog.plan is not None, timeout=60_000)
    text = dialog.figures.text()
    assert f"Version 2: {PLAN.target.layers} layers × {PLAN.target.hidden} wide" in text
    assert f"layers 0–{PLAN.target.layers} afterwards" in text and "backup-v1" in text
    assert dialog.migrate_button.isEnabled()
    assigned: list[LayersAssigned] = []
    gui.bridge.layers.connect(assigned.append)
    dialog.migrate_button.click()
    qtbot.waitUntil(lambda: dialog.outcome is not None, timeout=120_000)
    assert dialog.outcome["version_after"] == 2
    before, after = dialog.outcome["held_out_loss_before"], dialog.outcome["held_out_loss_after"]
    assert abs(after - before) <= 1e-4 * before
    assert "Now on version 2" in dialog.status.text()
    assert "Model upgraded" in [title for title, _ in gui.tray.notifications]
    qtbot.waitUntil(lambda: any(e.architecture_version == 2 for e in assigned), timeout=120_000)
    assert not banner.isVisible()
