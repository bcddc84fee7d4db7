"""A node whose checkpoints are damaged never loses the good copy and never restarts silently.

Solo nodes in-process (real engine, runtime and checkpoint files): a corrupt newest checkpoint
resumes from the verified older copy with an event saying so; both corrupt with no replica stops
with exit code 3 and leaves the files as they were (headless default), restarts from scratch only
when ``--on-corrupt-checkpoint restart`` says so, and in the app waits for the volunteer's answer.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest
import torch

from app.node import hardware
from app.node.config import NodeConfig
from app.node.engine import NodeEngine
from app.node.events import (
    CheckpointDecisionNeeded,
    CheckpointRecovered,
    CheckpointSetAside,
    ErrorOccurred,
    Event,
    ResolveCorruptCheckpoint,
    StepDone,
)
from app.node.faults import EXIT_CORRUPT_CHECKPOINT
from app.node.model.checkpoint import SET_ASIDE_MARK, previous_path
from app.node.training.checkpointing import checkpoint_path, read_resume_point

TRAINING = {"model": "tiny", "batch_size": 4, "micro_batches": 2, "seq_len": 32, "lr": 3e-3,
            "warmup_steps": 0, "inner_steps": 3, "checkpoint_every": 2, "linger_s": 0.0}


def _config(data_dir: Path, max_steps: int, **changes: object) -> NodeConfig:
    report = hardware.HardwareReport(hardware.detect_device("cpu"), 20.0, hardware.tier_for_ms(20.0),
                                     torch.__version__, time.time())
    hardware.save_cache(data_dir, report)
    config = NodeConfig(data_dir=data_dir, port=0, max_steps=max_steps, training=dict(TRAINING))
    return dataclasses.replace(config, **changes)


class _Run:
    def __init__(self, config: NodeConfig) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self.asked = threading.Event()
        self.engine = NodeEngine(config)
        self.engine.subscribe(self._record)

    def _record(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)
        if isinstance(event, CheckpointDecisionNeeded):
            self.asked.set()

    def of(self, kind: type) -> list:
        with self.lock:
            return [e for e in self.events if isinstance(e, kind)]

    def finish(self) -> int:
        assert self.engine.wait(timeout=120), "the node did not finish"
        assert self.engine.exit_code is not None
        return self.engine.exit_code


def _trained(data_dir: Path) -> None:
    """Four steps, checkpoints after steps 2 and 4: newest holds step 4, .prev step 2."""
    run = _Run(_config(data_dir, 4))
    run.engine.start()
    assert run.finish() == 0
    assert read_resume_point(data_dir).driver_step == 4
    assert previous_path(checkpoint_path(data_dir)).exists()


def _flip(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-10] + bytes([data[-10] ^ 0x01]) + data[-9:])


def test_corrupt_newest_resumes_from_the_verified_copy_and_says_so(tmp_path: Path) -> None:
    _trained(tmp_path)
    path = checkpoint_path(tmp_path)
    _flip(path)
    run = _Run(_config(tmp_path, 2))
    run.engine.start()
    assert run.finish() == 0
    (aside,) = run.of(CheckpointSetAside)
    assert aside.original == str(path) and aside.loaded == str(path) and "SHA-256" in aside.reason
    assert Path(aside.now_at).exists() and SET_ASIDE_MARK in aside.now_at
    assert [s.step for s in run.of(StepDone)] == [3, 4]  # resumed after step 2: nothing before it lost
    assert read_resume_point(tmp_path).driver_step == 4


def test_both_corrupt_headless_stops_with_exit_3_and_touches_nothing(tmp_path: Path) -> None:
    _trained(tmp_path)
    path = checkpoint_path(tmp_path)
    _flip(path)
    path.with_name(path.name + ".prev").write_bytes(b"")
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    run = _Run(_config(tmp_path, 2, headless=True))
    run.engine.start()
    assert run.finish() == EXIT_CORRUPT_CHECKPOINT
    assert not run.of(StepDone)
    fatal = [e for e in run.of(ErrorOccurred) if e.fatal]
    assert fatal and "both checkpoints are unusable" in fatal[-1].message
    assert "--on-corrupt-checkpoint restart" in fatal[-1].message
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before


def test_both_corrupt_restart_flag_starts_afresh_says_so_and_keeps_the_files(tmp_path: Path) -> None:
    _trained(tmp_path)
    path = checkpoint_path(tmp_path)
    _flip(path)
    _flip(previous_path(path))
    run = _Run(_config(tmp_path, 2, headless=True, on_corrupt_checkpoint="restart"))
    run.engine.start()
    assert run.finish() == 0
    (recovered,) = run.of(CheckpointRecovered)
    assert recovered.how == "restart" and len(recovered.set_aside) == 2
    assert all(Path(p).exists() for p in recovered.set_aside)
    assert [s.step for s in run.of(StepDone)] == [1, 2]
    assert read_resume_point(tmp_path).driver_step == 2


@pytest.mark.parametrize("choice", ["restart", "stop"])
def test_both_corrupt_in_the_app_waits_for_the_volunteer(tmp_path: Path, choice: str) -> None:
    _trained(tmp_path)
    path = checkpoint_path(tmp_path)
    _flip(path)
    _flip(previous_path(path))
    run = _Run(_config(tmp_path, 1))  # not headless, no flag: ask
    run.engine.start()
    assert run.asked.wait(timeout=120), "the node never asked"
    assert not run.of(StepDone)  # nothing happens while it waits
    assert run.engine.call(ResolveCorruptCheckpoint(choice)) is True
    code = run.finish()
    if choice == "restart":
        assert code == 0 and [s.step for s in run.of(StepDone)] == [1]
        assert run.of(CheckpointRecovered)[0].how == "restart"
    else:
        assert code == EXIT_CORRUPT_CHECKPOINT and not run.of(StepDone)
