"""A full disk anywhere stops the node cleanly: a clear message, exit code 4, never a hang, nothing
half-written, and the next start works once there is space again.

ENOSPC is injected as the OSError (or SQLite's SQLITE_FULL) a real full disk raises, at each write
site of a solo node in-process: the checkpoint, the ledger, the log file and the data shards. As
root a real small tmpfs is filled up under a node process too.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tomli_w
import torch

from app.node import hardware
from app.node.config import NodeConfig
from app.node.devnet import MAIN
from app.node.engine import NodeEngine
from app.node.events import ErrorOccurred, Event, StepDone
from app.node.faults import EXIT_DISK_FULL, is_disk_full, on_disk_full
from app.node.logs import LOGGER_NAME, configure_file_logging
from app.node.model.checkpoint import CheckpointError, load_checkpoint
from app.node.training.checkpointing import checkpoint_path, read_resume_point

TRAINING = {"model": "tiny", "batch_size": 4, "micro_batches": 2, "seq_len": 32, "lr": 3e-3,
            "warmup_steps": 0, "inner_steps": 3, "checkpoint_every": 2, "linger_s": 0.0}


def _enospc(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _cache_speed(data_dir: Path) -> None:
    report = hardware.HardwareReport(hardware.detect_device("cpu"), 20.0, hardware.tier_for_ms(20.0),
                                     torch.__version__, time.time())
    hardware.save_cache(data_dir, report)


def _config(data_dir: Path, max_steps: int | None) -> NodeConfig:
    _cache_speed(data_dir)
    return NodeConfig(data_dir=data_dir, port=0, max_steps=max_steps, training=dict(TRAINING), headless=True,
                      economics={"preset": "devnet"})  # 1 s epochs: the ledger is written while it trains


class _Run:
    def __init__(self, config: NodeConfig) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self.engine = NodeEngine(config)
        self.engine.subscribe(self._record)

    def _record(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: type) -> list:
        with self.lock:
            return [e for e in self.events if isinstance(e, kind)]

    def run(self) -> int:
        self.engine.start()
        assert self.engine.wait(timeout=120), "the node hung"
        assert self.engine.exit_code is not None
        return self.engine.exit_code

    def fatal(self) -> str:
        fatal = [e for e in self.of(ErrorOccurred) if e.fatal]
        assert fatal, "no fatal error event"
        return fatal[-1].message


# --- classification -------------------------------------------------------------------------------


def test_disk_full_is_recognised_through_wrappers_and_nothing_else_is() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(full)
    try:
        try:
            raise full
        except OSError as exc:
            raise CheckpointError("could not write checkpoint") from exc
    except CheckpointError as wrapped:
        assert is_disk_full(wrapped)
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(ValueError("No space left on device"))
    assert not is_disk_full(None)


# --- the log file ---------------------------------------------------------------------------------


class _FullStream:
    """A log file's stream on a full disk: every write and flush fails like the OS does (the
    rest, seek and tell for rotation, is the real file's)."""

    def __init__(self, real: object) -> None:
        self._real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def write(self, _text: str) -> int:
        _enospc()
        return 0

    def flush(self) -> None:
        _enospc()

    def close(self) -> None:
        self._real.close()  # type: ignore[attr-defined]


def test_log_file_on_a_full_disk_goes_quiet_reports_once_and_closes_without_raising(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    reports: list[str] = []
    remove_watch = on_disk_full(lambda where, _exc: reports.append(where))
    remove = configure_file_logging(tmp_path, "INFO")
    try:
        logger = logging.getLogger(LOGGER_NAME)
        (handler,) = [h for h in logger.handlers if getattr(h, "baseFilename", "").startswith(str(tmp_path))]
        handler.stream = _FullStream(handler.stream)
        for i in range(50):
            logger.warning("line %d", i)
        assert len(reports) == 1 and "log file" in reports[0]
    finally:
        remove()  # flushing the full stream fails: must not raise
        remove_watch()
    assert "Logging error" not in capfd.readouterr().err


# --- each write site of a running node ------------------------------------------------------------


def _break_log_file(_monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the engine has opened its log file, the disk under it is full."""
    from app.node import logs

    original = logs.configure_file_logging

    def configure(log_dir: Path, level: str = "INFO"):  # noqa: ANN202
        remove = original(log_dir, level)
        for h in logging.getLogger(LOGGER_NAME).handlers:
            if getattr(h, "baseFilename", "").startswith(str(log_dir)):
                h.stream = _FullStream(h.stream)
        return remove

    _monkeypatch.setattr("app.node.engine.configure_file_logging", configure)


class _HalfWritten:
    """A file on a disk that fills up mid-write: half the bytes land, then ENOSPC."""

    def __init__(self, real: object) -> None:
        self._real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def __enter__(self) -> _HalfWritten:
        return self

    def __exit__(self, *exc: object) -> None:
        self._real.close()  # type: ignore[attr-defined]

    def write(self, data: bytes) -> int:
        self._real.write(data[: len(data) // 2])  # type: ignore[attr-defined]
        _enospc()
        return 0


def _break_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    def full_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        return _HalfWritten(builtins.open(file, mode, *args, **kwargs))  # type: ignore[call-overload]

    monkeypatch.setattr("app.node.model.checkpoint.open", full_open, raising=False)


def _break_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ledger transaction fails as SQLite does on a full disk (the first is the node's own
    start-up write; the error is caught and logged there, and must still stop the node)."""
    from app.node.economics.ledger import Ledger

    def store(self: Ledger, records: list, now_ms: int) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Ledger, "_store", store)


def _break_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.node.data.store.atomic_write", _enospc)


SITES = {"checkpoint": _break_checkpoint, "ledger": _break_ledger, "log file": _break_log_file,
         "shards": _break_shards}


@pytest.mark.parametrize("site", list(SITES))
def test_enospc_at_each_write_site_stops_cleanly_and_the_next_start_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], site: str) -> None:
    SITES[site](monkeypatch)
    broken = _Run(_config(tmp_path, None))  # trains until the fault stops it
    assert broken.run() == EXIT_DISK_FULL
    message = broken.fatal()
    assert "is full" in message and "Free some space" in message and str(tmp_path) in message
    assert "Logging error" not in capfd.readouterr().err
    assert not list(tmp_path.rglob("*.tmp")), "a half-written file was left behind"
    path = checkpoint_path(tmp_path)
    if path.exists():
        load_checkpoint(path)  # whatever is there is whole
    monkeypatch.undo()  # space freed

    again = _Run(_config(tmp_path, 2))
    assert again.run() == 0
    steps = [s.step for s in again.of(StepDone)]
    assert len(steps) == 2 and steps == list(range(steps[0], steps[0] + 2))
    point = read_resume_point(tmp_path)
    assert point is not None and point.driver_step == steps[-1]


# --- a real full disk (tmpfs) ---------------------------------------------------------------------


def _can_mount() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to mount a small tmpfs"
    if shutil.which("mount") is None:
        return "no mount command"
    return None


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201
    reason = _can_mount()
    if reason is not None:
        pytest.skip(reason)
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _node(data_dir: Path, max_steps: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(MAIN), "--headless", "--json-events", "--data-dir", str(data_dir),
                             "--port", "0", "--max-steps", str(max_steps)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _fill(disk: Path) -> None:
    with open(disk / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_real_full_disk_stops_the_node_process_with_exit_4_and_a_restart_resumes(small_disk: Path) -> None:
    data_dir = small_disk / "node"
    data_dir.mkdir()
    (data_dir / "config.toml").write_bytes(tomli_w.dumps({"training": TRAINING}).encode())
    _cache_speed(data_dir)
    node = _node(data_dir, 1000)
    assert node.stdout is not None
    errors = []
    for line in node.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "step" and event["step"] == 3:
            _fill(small_disk)  # everything written from now on fails
        if event.get("event") == "error" and event["fatal"]:
            errors.append(event["message"])
    _, err = node.communicate(timeout=120)  # exits on its own: no hang, no SIGTERM needed
    assert node.returncode == EXIT_DISK_FULL
    assert errors and "is full" in errors[-1] and "Logging error" not in err
    assert not list(data_dir.rglob("*.tmp"))

    (small_disk / "filler").unlink()
    again = _node(data_dir, 2)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0
    steps = [json.loads(x)["step"] for x in out.splitlines() if x.startswith('{"event":"step"')]
    assert len(steps) == 2 and steps[0] >= 2  # resumed from a checkpoint, not from step 1
