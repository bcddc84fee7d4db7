"""One node process per data dir (#15 item 4), held with an OS file lock.

Two processes on one data dir share one node id and one wallet and hand out the same ledger
sequence numbers, which voids their records as double spends. So the engine takes an exclusive
OS lock (``filelock``: ``flock`` on POSIX, ``LockFileEx`` on Windows) on ``<data_dir>/node.lock``
before it writes anything there, and records who holds it in ``node.pid``. The OS drops the lock
when the process dies, even by SIGKILL, so a stale pid file never blocks a restart.

Within one process engines run one after another (the app's hardware probe stops in the
background before the node starts), so a lock held by this same process is waited for a while
instead of refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_FILE = "node.lock"
PID_FILE = "node.pid"
SAME_PROCESS_WAIT_S = 30.0
"""How long an engine waits for an earlier engine of this process to let go of the data dir."""


_HELD_HERE: set[Path] = set()
"""Data dirs this process holds. Kept here, not read from the pid file: a holder in this process
removes its pid file just before letting go, and an engine that looked in between took a lock
held by its own process for another process's."""
_HELD_HERE_LOCK = threading.Lock()


class DataDirBusy(RuntimeError):
    """Another process holds the data dir; the message names it."""

    def __init__(self, data_dir: Path, holder: dict[str, object] | None) -> None:
        self.holder_pid = holder.get("pid") if holder else None
        who = (f"process {self.holder_pid} (started {holder.get('started', '?')})" if holder
               else "another process (its pid file is missing)")
        super().__init__(f"the data dir {data_dir} is in use by {who}: only one node may run on a data dir. "
                         "Stop that one first, or choose another folder with --data-dir")


class DataDirLock:
    """The exclusive claim on one data dir; ``acquire`` then ``release`` (from any thread)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        # thread_local=False: the engine takes the lock on the caller's thread and lets it go on its own
        self._lock = FileLock(self.data_dir / LOCK_FILE, thread_local=False)
        self._key = self.data_dir.resolve()
        self._waiting = threading.Event()

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    @property
    def waiting(self) -> threading.Event:
        """Set while ``acquire`` waits for an earlier holder in this process to let go."""
        return self._waiting

    def acquire(self, same_process_wait_s: float = SAME_PROCESS_WAIT_S) -> None:
        """Take the lock or raise ``DataDirBusy`` naming the holder (pid and start time)."""
        with _HELD_HERE_LOCK:  # the try and the look at who holds it, in one step with release
            try:
                self._lock.acquire(timeout=0)
                _HELD_HERE.add(self._key)
                got, ours = True, True
            except Timeout:
                got, ours = False, self._key in _HELD_HERE
        if not got:
            if not ours:
                raise DataDirBusy(self.data_dir, self.holder())
            self._waiting.set()
            try:
                self._lock.acquire(timeout=same_process_wait_s)
            except Timeout:
                raise DataDirBusy(self.data_dir, self.holder()) from None
            finally:
                self._waiting.clear()
            with _HELD_HERE_LOCK:
                _HELD_HERE.add(self._key)
        record = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        # the lock is what excludes; the pid file only names the holder (a full disk must not stop us)
        with contextlib.suppress(OSError):
            (self.data_dir / PID_FILE).write_text(json.dumps(record), encoding="utf-8")

    def release(self) -> None:
        if not self._lock.is_locked:
            return
        pid_file = self.data_dir / PID_FILE
        try:
            if json.loads(pid_file.read_text(encoding="utf-8")).get("pid") == os.getpid():
                pid_file.unlink()
        except (OSError, ValueError, AttributeError):
            pass
        with _HELD_HERE_LOCK:
            self._lock.release()
            _HELD_HERE.discard(self._key)

    def holder(self) -> dict[str, object] | None:
        """Who recorded themselves as the holder, or None when no readable record exists."""
        try:
            value = json.loads((self.data_dir / PID_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None
