"""The whole Linux build: PyInstaller, both smoke tests on the frozen app, the tarball.

Slow (3-10 minutes of CPU, ~1 GB of disk), so excluded by default: ``./test.sh -m slow -k build``.
It needs PyInstaller (``scripts/bootstrap.sh packaging``) and reuses build/ as PyInstaller's cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux build")]


@pytest.mark.timeout(3600)
def test_build_produces_a_bundle_that_passes_its_smoke_tests(tmp_path: Path) -> None:
    pytest.importorskip("PyInstaller", reason="run scripts/bootstrap.sh packaging first")
    done = subprocess.run([sys.executable, str(ROOT / "packaging" / "build.py"), "--dist", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=3500, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["smoke_ok"] is True and report["variant"] == "cpu"
    assert report["tier"] in {"T1", "T2", "T3", "T4", "T5"}

    executable = tmp_path / "NeuroShard" / "neuroshard"
    assert executable.is_file()
    assert not list((tmp_path / "NeuroShard").rglob("grpc_tools"))
    assert (tmp_path / "NeuroShard" / "_internal" / "torch" / "bin" / "torch_shm_manager").is_file()
    assert (tmp_path / "NeuroShard" / "_internal" / "resources" / "icons" / "neuroshard.svg").is_file()

    (tarball,) = tmp_path.glob("NeuroShard-*-linux-*-cpu.tar.gz")
    assert str(tarball) in report["artifacts"]
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        assert {"NeuroShard/neuroshard", "NeuroShard/install.sh", "NeuroShard/neuroshard.desktop"} <= names
        assert tar.getmember("NeuroShard/neuroshard").mode & 0o111
