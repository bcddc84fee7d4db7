"""The work view on the real runtime: the training round with its progress, when the node next
shares and saves, a checkpoint when the session ends (quit, logout, SIGTERM), charts and counters
that continue after a restart, and "your piece of the model"."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.node.events import NetworkChanged
from app.node.values import training_schedule
from app.ui.app import GuiApp
from app.ui.session_end import SessionEnd
from app.ui.work_history import HISTORY_FILE
from tests.ui.funded_ledger import fast_keystore
from tests.ui.helpers import wait_training

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = Path("checkpoints")


def test_the_dashboard_shows_the_round_and_the_next_sync_and_save(qtbot, gui, config) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    steps = []
    gui.bridge.step.connect(steps.append)
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=60_000)
    work, last = gui.window.dashboard.work, steps[-1]
    assert work.round_bar.maximum() == last.inner_steps_per_sync
    assert work.round_bar.value() == min(last.inner_step, last.inner_steps_per_sync)
    assert "more step" in work.sync_label.text() or "now" in work.sync_label.text()
    every = training_schedule(config.training).checkpoint_every
    next_save = int(work.checkpoint_label.text().split("at step ")[1].split(" ")[0])
    assert next_save % every == 0 and last.step < next_save <= last.step + every
    assert "about" in work.checkpoint_label.text()  # two steps give a pace, so a time estimate


def test_charts_and_counters_continue_after_a_restart(qtbot, gui, config) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    chart = gui.window.dashboard.loss_chart
    qtbot.waitUntil(lambda: chart.point_count() >= 2, timeout=60_000)
    gui.window.save_state()
    gui.controller.stop()
    before = gui.window.history.totals()
    points = chart.points()
    assert before.steps >= 2 and json.loads((config.data_dir / HISTORY_FILE).read_text())["steps"] == before.steps
    again = GuiApp(config, keystore_factory=fast_keystore)
    assert again.window.dashboard.loss_chart.points()[:len(points)] == points  # drawn before any new step
    assert again.window.history.totals().steps == before.steps
    assert f"{before.steps:,} training steps" in again.window.network.piece.contribution_label.text()
    again.launch()
    wait_training(qtbot, again)
    qtbot.waitUntil(lambda: again.window.history.totals().steps > before.steps, timeout=60_000)
    assert again.window.history.totals().tokens > before.tokens
    again.dispose()


def test_a_logout_stops_the_node_with_a_checkpoint(qtbot, gui, config) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    qtbot.waitUntil(lambda: gui.window.history.totals().steps >= 1, timeout=60_000)
    saved = config.data_dir / CHECKPOINT
    before = {p: p.stat().st_mtime_ns for p in saved.rglob("*") if p.is_file()} if saved.exists() else {}
    session = SessionEnd(gui.qapp, gui._shutdown)
    try:
        session._on_session_end(None)  # what the desktop's session manager sends at logout
    finally:
        session.uninstall()
    assert gui.controller.engine is None
    after = {p: p.stat().st_mtime_ns for p in saved.rglob("*") if p.is_file()}
    assert any(before.get(p) != mtime for p, mtime in after.items()), "no checkpoint written at logout"


SIGTERM_SCRIPT = """
import sys, pathlib
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.node import identity
from app.node.events import NodeState
from app.ui.app import GuiApp
from app.ui.session_end import SessionEnd
from tests.ui.conftest import funded_wallet, node_config
from tests.ui.funded_ledger import fast_keystore
data = pathlib.Path(sys.argv[1])
funded_wallet(data)
gui = GuiApp(node_config(data), keystore_factory=fast_keystore)
SessionEnd(gui.qapp, gui.quit)
gui.bridge.step.connect(lambda e: print("step", e.step, flush=True))
gui.launch()
app.exec()
print("ended", flush=True)
"""


def test_sigterm_stops_the_window_and_the_node_with_a_checkpoint(tmp_path, measured_dir) -> None:  # noqa: ANN001
    from tests.ui.conftest import new_data_dir

    data = new_data_dir(tmp_path, measured_dir)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    child = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, str(data)], cwd=ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = ""
        while not line.startswith("step"):
            line = child.stdout.readline()
            assert line, "the app ended before its first training step"
        signalled = time.time_ns()
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == 0
        assert "ended" in child.stdout.read()
    finally:
        if child.poll() is None:
            child.kill()
    written = [p for p in (data / CHECKPOINT).rglob("*") if p.is_file() and p.stat().st_mtime_ns >= signalled]
    assert written, "no checkpoint written after SIGTERM"


def test_your_piece_of_the_model(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    piece = gui.window.network.piece
    layers = gui.bridge.latest("layers")
    qtbot.waitUntil(lambda: "of the model's" in piece.layers_label.text(), timeout=10_000)
    assert f"({layers.last_layer - layers.first_layer} of the model's {layers.total_layers})" in piece.layers_label.text()
    assert piece.version_label.text().startswith(f"version {layers.architecture_version}:")
    replicas = tuple(range(1, layers.total_layers + 1))
    gui.controller.engine.emit(NetworkChanged(reachable=False, peers=0, phase="genesis", replicas_per_layer=replicas))
    qtbot.waitUntil(lambda: f"layer {layers.first_layer}: {replicas[layers.first_layer]} cop"
                    in piece.copies_label.text(), timeout=5_000)
    qtbot.waitUntil(lambda: gui.window.history.totals().steps >= 1, timeout=60_000)
    assert "training steps" in piece.contribution_label.text() and "tokens" in piece.contribution_label.text()
