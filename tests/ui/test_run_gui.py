"""``run_gui`` end to end in a fresh process, as main.py calls it: window, engine, clean exit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_run_gui_starts_the_node_and_exits_cleanly_when_closed(tmp_path, measured_dir) -> None:  # noqa: ANN001
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(measured_dir / "hardware.json", data_dir / "hardware.json")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "ui" / "run_gui_smoke.py"), str(data_dir)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "state training" in result.stdout and "exit 0" in result.stdout
    assert (data_dir / "ui.ini").exists()  # window geometry saved on the way out
