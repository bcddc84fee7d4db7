"""One node process per data dir: a second start names the holder's pid and exits 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.node.datadir_lock import DataDirBusy, DataDirLock
from app.node.devnet import MAIN

HOLDER = """
import sys
from pathlib import Path
from app.node.datadir_lock import DataDirLock
lock = DataDirLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
sys.stdin.read()  # hold it until the test closes our stdin (or kills us)
lock.release()
"""


def _holder(data_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=MAIN.parent)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_node_process_on_a_locked_dir_names_the_holder_and_exits_2(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    try:
        second = subprocess.run([sys.executable, str(MAIN), "--headless", "--data-dir", str(tmp_path),
                                 "--port", "0", "--max-steps", "0"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"in use by process {holder.pid}" in second.stderr and "--data-dir" in second.stderr
        assert not (tmp_path / "logs").exists()  # refused before writing anything there
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0


def test_the_lock_dies_with_its_process_so_a_restart_after_sigkill_works(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    with pytest.raises(DataDirBusy) as info:
        DataDirLock(tmp_path).acquire()
    assert info.value.holder_pid == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    lock = DataDirLock(tmp_path)  # the stale node.pid is still there; the OS lock is not
    lock.acquire()
    assert lock.held and lock.holder()["pid"] == os.getpid()
    lock.release()
    assert not lock.held and not (tmp_path / "node.pid").exists()


def test_a_later_engine_of_the_same_process_waits_for_the_earlier_one(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    second = DataDirLock(tmp_path)
    got = threading.Event()

    def take() -> None:
        second.acquire()
        got.set()

    waiter = threading.Thread(target=take)
    waiter.start()
    assert not got.is_set() and not second.held
    first.release()
    waiter.join(timeout=60)
    assert got.is_set() and second.held
    second.release()


def test_an_engine_refuses_a_dir_another_process_holds(tmp_path: Path) -> None:
    from app.node.config import NodeConfig
    from app.node.engine import EngineError, NodeEngine

    holder = _holder(tmp_path)
    try:
        with pytest.raises(EngineError, match=f"in use by process {holder.pid}"):
            NodeEngine(NodeConfig(data_dir=tmp_path, port=0, max_steps=0)).start()
    finally:
        holder.communicate("", timeout=30)


def test_a_holder_of_this_process_that_is_letting_go_is_waited_for_not_taken_for_another_process(
        tmp_path: Path) -> None:
    """release() removes the pid file, then lets go of the lock: an engine of this process that
    tried in between found no pid file and refused the dir as another process's (loaded triple
    check, run 2 at 7539c4a). Whether this process holds the dir is now known without the file."""
    first = DataDirLock(tmp_path)
    first.acquire()
    (tmp_path / "node.pid").unlink()  # the moment inside first.release(): no pid file, lock still held
    second = DataDirLock(tmp_path)
    outcome: list[object] = []

    def take() -> None:
        try:
            second.acquire()
            outcome.append("acquired")
        except DataDirBusy as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=take)
    waiter.start()
    while not (second.waiting.is_set() or outcome):  # it waits (the fix) or has already refused (the bug)
        time.sleep(0.01)
    first.release()
    waiter.join(timeout=60)
    assert outcome == ["acquired"] and second.held
    second.release()
