"""Start failures are seen: a dialog naming the problem and the fix, a taken port replaced by a
free one (and said), and with no usable display one stderr line and exit 2 (real runtime)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.node.events import NodeState
from app.ui.app import GuiApp
from app.ui.start_checks import display_problem
from app.ui.widgets.start_failure import advice
from tests.ui.funded_ledger import fast_keystore
from tests.ui.helpers import wait_training

ROOT = Path(__file__).resolve().parents[2]
HOLD_LOCK = """
import json, os, sys
from filelock import FileLock
from app.node.datadir_lock import LOCK_FILE, PID_FILE
data = sys.argv[1]
lock = FileLock(os.path.join(data, LOCK_FILE)); lock.acquire()
open(os.path.join(data, PID_FILE), "w").write(json.dumps({"pid": os.getpid(), "started": "now"}))
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def other_node(wallet_dir: Path) -> Iterator[subprocess.Popen]:
    """Another process holding this data dir, as a second NeuroShard would."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(wallet_dir)], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "held"
    yield holder
    if holder.poll() is None:
        holder.stdin.close()
        holder.wait(timeout=10)


def test_a_busy_data_dir_opens_a_dialog_with_the_fix_and_try_again_starts(qtbot, config, other_node) -> None:  # noqa: ANN001
    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    qtbot.waitUntil(lambda: app.window.start_failure is not None, timeout=15_000)
    dialog = app.window.start_failure
    assert dialog.isVisible()
    assert "in use by process" in dialog.text() and "Close it" in dialog.informativeText()
    other_node.stdin.close()  # the other node quits
    other_node.wait(timeout=10)
    dialog.retry_button.click()
    wait_training(qtbot, app)
    app.dispose()


def test_a_taken_port_falls_back_to_a_free_one_and_says_which(qtbot, config, wallet_dir) -> None:  # noqa: ANN001
    import dataclasses

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        app = GuiApp(dataclasses.replace(config, port=taken), keystore_factory=fast_keystore)
        app.launch()
        wait_training(qtbot, app)
        text = app.window.message_bar.text()
        assert f"Port {taken} is used by another program" in text
        used = app.controller.engine.config.port
        assert used not in (0, taken) and f"port {used}" in text
        assert app.window.settings.port.value() == taken  # the setting itself is unchanged
        assert app.bridge.state == NodeState.TRAINING
        app.dispose()


def test_with_no_display_the_window_says_why_on_one_line_and_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    script = ("import sys, tempfile, pathlib\nfrom app.node.config import NodeConfig\nfrom app.ui.app import run_gui\n"
              "sys.exit(run_gui(NodeConfig(data_dir=pathlib.Path(tempfile.mkdtemp()))))")
    if not sys.platform.startswith("linux"):
        pytest.skip("DISPLAY decides only on Linux")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no display" in lines[0] and "--headless" in lines[0]


def test_missing_window_libraries_are_named_with_the_install_command() -> None:
    missing = {"xcb-icccm", "xcb-keysyms"}
    problem = display_problem({"DISPLAY": ":0"}, "linux",
                              lambda name: None if name in missing else f"lib{name}.so")
    assert problem is not None
    assert "sudo apt-get install -y libxcb-icccm4 libxcb-keysyms1" in problem
    assert display_problem({"DISPLAY": ":0"}, "linux", lambda name: f"lib{name}.so") is None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux", lambda name: None) is None


def test_each_known_start_problem_gets_its_fix() -> None:
    assert advice("cannot listen on 127.0.0.1:7450: Failed to bind").in_settings
    assert "port" in advice("cannot listen on 127.0.0.1:7450: Failed to bind").fix
    assert "Logs" in advice("something nobody foresaw").fix
