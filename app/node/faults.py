"""Deliberate stops on faults, their exit codes, and the one question a fault can ask the volunteer.

Torch-free on purpose: the engine and the runtime contract import it before torch is loaded.
Exit codes beyond cli.py's 0 / 1 / 2, so a supervisor script can tell faults apart:

- ``EXIT_CORRUPT_CHECKPOINT`` (3): neither checkpoint copy verifies, no replica had the stage,
  and the policy (``--on-corrupt-checkpoint stop``, the headless default) said stop.
- ``EXIT_DISK_FULL`` (4): a write failed because the disk (or the data dir's quota) is full.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import threading
from collections.abc import Awaitable, Callable

from app.node.events import CheckpointDecisionNeeded, Event

POLICIES = ("ask", "restart", "stop")
EXIT_CORRUPT_CHECKPOINT = 3
EXIT_DISK_FULL = 4


class FaultStop(Exception):
    """The node stops on purpose because of a fault; the engine exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class CheckpointDecision:
    """The one open question "restart or stop?" between the runtime (asks) and the engine (answers
    the volunteer's command). Loop thread only."""

    def __init__(self) -> None:
        self._pending: asyncio.Future[str] | None = None

    @property
    def pending(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def answer(self, choice: str) -> bool:
        """Deliver the volunteer's choice; False when nothing is being asked."""
        if choice not in ("restart", "stop"):
            raise ValueError(f"choice must be restart or stop, not {choice!r}")
        if not self.pending:
            return False
        assert self._pending is not None
        self._pending.set_result(choice)
        return True

    async def ask(self, emit: Callable[[Event], None], reason: str,
                  stopped: Callable[[], Awaitable[object]]) -> str:
        """Publish the question and wait for the answer; a stop request meanwhile answers "stop"."""
        self._pending = asyncio.get_running_loop().create_future()
        emit(CheckpointDecisionNeeded(reason=reason))
        stop = asyncio.ensure_future(stopped())
        try:
            await asyncio.wait({self._pending, stop}, return_when=asyncio.FIRST_COMPLETED)
            return self._pending.result() if self._pending.done() else "stop"
        finally:
            stop.cancel()
            if not self._pending.done():
                self._pending.cancel()


def resolve_policy(policy: str | None, headless: bool) -> str:
    """The flag's value, or the default: ask in the app, stop without one."""
    if policy is None:
        return "stop" if headless else "ask"
    if policy not in POLICIES:
        raise ValueError(f"on_corrupt_checkpoint must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy


# --- a full disk anywhere (#15 item 3) ------------------------------------------------------------

_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
_FULL_WINERRORS = frozenset({39, 112})  # ERROR_HANDLE_DISK_FULL, ERROR_DISK_FULL
_SQLITE_FULL = 13


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc``, or anything in its cause/context chain, is "no space left": an OSError
    with ENOSPC/EDQUOT (or the Windows equivalents), or SQLite's SQLITE_FULL."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and (exc.errno in _FULL_ERRNOS
                                         or getattr(exc, "winerror", None) in _FULL_WINERRORS):
            return True
        if isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL
                                               or "database or disk is full" in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


DiskFullHandler = Callable[[str, BaseException], None]
_handlers: list[DiskFullHandler] = []
_handlers_lock = threading.Lock()


def on_disk_full(handler: DiskFullHandler) -> Callable[[], None]:
    """Call ``handler(where, exc)`` (from any thread) when a write site reports a full disk;
    returns the function that unregisters it. The engine registers one while it runs."""
    with _handlers_lock:
        _handlers.append(handler)

    def remove() -> None:
        with _handlers_lock:
            if handler in _handlers:
                _handlers.remove(handler)

    return remove


def report_disk_full(where: str, exc: BaseException) -> None:
    """A write failed for lack of space at ``where``: the running engine stops cleanly."""
    with _handlers_lock:
        handlers = list(_handlers)
    for handler in handlers:
        handler(where, exc)


def disk_full_message(data_dir: object, where: str, exc: BaseException) -> str:
    return (f"the disk holding {data_dir} is full ({where}: {exc}). The node stopped; checkpoints, the "
            "ledger and data shards are written atomically, so none was left half-written. Free some "
            "space and start it again: it resumes from its last checkpoint")
