"""The volunteer's disk cap (``limits.disk_bytes``): the data dir must not grow beyond it.

The engine registers a :class:`DiskBudget` for its data dir while it runs; whatever writes large
files under that dir (the shard store, checkpoints) asks :func:`budget_for` for the budget of the
file's folder and writes inside :meth:`DiskBudget.reserve`, which refuses with
:class:`DiskCapExceeded` *before* a byte is written (so nothing is ever half-written) and tells
the engine, which publishes the message. A registry keyed by folder, rather than a budget passed
down through every constructor, keeps the writers' signatures unchanged and lets several nodes in
one process (tests, a devnet) each have their own cap.

Usage is measured by walking the dir at each reservation: writes of shards and checkpoints are
rare and large, so an exact figure is worth a directory walk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger("neuroshard.disk")


class DiskCapExceeded(OSError):
    """Writing this would take the data dir past ``limits.disk_bytes``; nothing was written."""


def _fmt(nbytes: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} B"


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (links not followed; files vanishing meanwhile skipped)."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(folder, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


class DiskBudget:
    def __init__(self, root: Path | str, cap_bytes: int, on_refused: Callable[[str], None] | None = None) -> None:
        if cap_bytes <= 0:
            raise ValueError("a disk cap must be positive")
        self.root = Path(root).resolve()
        self.cap_bytes = cap_bytes
        self.on_refused = on_refused
        self._lock = threading.Lock()  # a check and its write are one step: two writers cannot both pass

    def used_bytes(self) -> int:
        return tree_bytes(self.root)

    def room(self, nbytes: int, *, freed: int = 0) -> bool:
        """Whether writing ``nbytes`` (while ``freed`` bytes go away afterwards) stays under the cap.
        The peak counts, so ``freed`` only helps where the old file is gone before the new one lands."""
        return self.used_bytes() - freed + nbytes <= self.cap_bytes

    @contextlib.contextmanager
    def reserve(self, nbytes: int, *, what: str, freed: int = 0) -> Iterator[None]:
        """Hold the budget while the caller writes ``nbytes``; DiskCapExceeded (and nothing
        written) when they would not fit."""
        with self._lock:
            used = self.used_bytes()
            if used - freed + nbytes > self.cap_bytes:
                message = (f"{what} needs {_fmt(nbytes)}, but the data dir {self.root} already holds "
                           f"{_fmt(used)} of its {_fmt(self.cap_bytes)} cap (limits.disk_bytes); raise the cap "
                           "in Settings or free space in the data dir")
                self.refused(message)
                raise DiskCapExceeded(message)
            yield

    def refused(self, message: str) -> None:
        log.warning("disk cap: %s", message)
        if self.on_refused is not None:
            try:
                self.on_refused(message)
            except Exception:  # telling the UI must not turn a refusal into a crash
                log.exception("disk cap listener failed")


_budgets: dict[Path, DiskBudget] = {}
_registry_lock = threading.Lock()


def register(budget: DiskBudget) -> Callable[[], None]:
    """Enforce ``budget`` for every write under its root; returns the function that ends it."""
    with _registry_lock:
        _budgets[budget.root] = budget

    def unregister() -> None:
        with _registry_lock:
            if _budgets.get(budget.root) is budget:
                del _budgets[budget.root]

    return unregister


def budget_for(path: Path | str) -> DiskBudget | None:
    """The budget whose root holds ``path`` (the innermost one), or None when no cap applies."""
    target = Path(path).resolve()
    with _registry_lock:
        if not _budgets:
            return None
        for folder in (target, *target.parents):
            budget = _budgets.get(folder)
            if budget is not None:
                return budget
    return None
