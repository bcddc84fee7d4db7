"""The app shows its window before torch or grpc is imported (PLATFORM.md: torch costs ~2 s)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import os, sys, tempfile, pathlib
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.node.config import NodeConfig
from app.ui.app import GuiApp
gui = GuiApp(NodeConfig(data_dir=pathlib.Path(tempfile.mkdtemp())))
gui.window.show()
gui.window.warm_up()
print(sorted(m for m in ("torch", "grpc") if m in sys.modules))
"""


def test_building_and_showing_the_window_imports_neither_torch_nor_grpc() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
