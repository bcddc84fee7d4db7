"""The tarball's install.sh adds a menu entry whose Exec runs the unpacked executable, wherever
the folder was unpacked (spaces and shell specials included)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LINUX_DIR = Path(__file__).resolve().parents[2] / "packaging" / "linux"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell script")


def test_install_script_writes_a_menu_entry_for_the_unpacked_folder(autostart, tmp_path: Path) -> None:
    folder = tmp_path / "my apps $HOME & 100%" / "NeuroShard"
    folder.mkdir(parents=True)
    for name in ("install.sh", "neuroshard.desktop"):
        shutil.copy(LINUX_DIR / name, folder / name)
    (folder / "neuroshard.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    data_home = tmp_path / "data"
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(data_home)}
    done = subprocess.run(["sh", str(folder / "install.sh")], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    entry = (data_home / "applications" / "neuroshard.desktop").read_text()
    exec_lines = [line[len("Exec="):] for line in entry.splitlines() if line.startswith("Exec=")]
    assert len(exec_lines) == 1
    assert autostart.split_exec(exec_lines[0]) == [str(folder / "neuroshard")]
    assert "Icon=neuroshard\n" in entry and "[Desktop Entry]" in entry
    assert (data_home / "icons" / "hicolor" / "512x512" / "apps" / "neuroshard.png").is_file()
