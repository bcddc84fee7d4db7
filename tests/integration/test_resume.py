"""A node killed with SIGKILL and restarted resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tomli_w
import torch

from app.node import hardware
from app.node.devnet import MAIN

TRAINING = {"model": "tiny", "batch_size": 8, "micro_batches": 4, "seq_len": 64, "lr": 3e-3,
            "warmup_steps": 2, "inner_steps": 4, "checkpoint_every": 3, "linger_s": 0.0}


def _start(data_dir: Path, max_steps: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(MAIN), "--headless", "--json-events", "--data-dir", str(data_dir),
                             "--port", "0", "--max-steps", str(max_steps)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)


def _steps(proc: subprocess.Popen[str], until: int | None = None) -> list[int]:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "step":
            seen.append(int(event["step"]))
            if until is not None and seen[-1] >= until:
                os.killpg(proc.pid, signal.SIGKILL)
                break
    proc.wait(timeout=60)
    return seen


def test_killed_node_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    (data_dir / "config.toml").write_bytes(tomli_w.dumps({"training": TRAINING}).encode())
    # A fixed speed instead of the 8 s benchmark: this test is about resuming, not tiers.
    report = hardware.HardwareReport(hardware.detect_device("cpu"), 20.0, hardware.tier_for_ms(20.0),
                                     torch.__version__, time.time())
    hardware.save_cache(data_dir, report)

    first = _start(data_dir, 100)
    before = _steps(first, until=8)  # checkpoints after steps 3 and 6; killed during 8 or 9
    assert before[:8] == list(range(1, 9)) and first.returncode == -signal.SIGKILL

    second = _start(data_dir, 3)
    after = _steps(second)
    assert second.returncode == 0
    assert after == [7, 8, 9]  # resumed after step 6, the last checkpoint; nothing before it lost
    summary = json.loads((data_dir / "run_summary.json").read_text())
    assert summary["driver_step"] == 9 and summary["solo"] is True
