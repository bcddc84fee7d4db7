"""Run blocking work off the GUI thread and get the outcome back on it.

Everything slow (key derivation with scrypt, the hardware benchmark, engine commands) returns a
``concurrent.futures.Future``; :func:`watch` hands its result or error to callbacks that run on
the GUI thread, through a queued Qt signal, so a slot never races with the widgets it updates.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal

ResultCallback = Callable[[Any], None]
ErrorCallback = Callable[[str], None]

# Two workers: a keystore derivation and a benchmark may overlap; nothing else here is CPU-bound.
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="neuroshard-ui")
_LIVE: set[_Watcher] = set()


def describe_exception(exc: BaseException) -> str:
    """A message a volunteer can read: the exception's own text, else its type."""
    if isinstance(exc, concurrent.futures.TimeoutError):
        return "the node did not answer in time; it may be busy, try again"
    if isinstance(exc, concurrent.futures.CancelledError):
        return "the request was cancelled"
    text = str(exc).strip()
    return text or exc.__class__.__name__


class _Watcher(QObject):
    _done = Signal(object)

    def __init__(self, on_result: ResultCallback | None, on_error: ErrorCallback | None) -> None:
        super().__init__()
        self._on_result = on_result
        self._on_error = on_error
        self.cancelled = False
        self._done.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    def _deliver(self, future: concurrent.futures.Future[Any]) -> None:
        _LIVE.discard(self)
        if self.cancelled:
            return
        try:
            result = future.result(timeout=0)
        except BaseException as exc:  # every failure becomes a message, never a crash of the app
            _call_if_alive(self._on_error, describe_exception(exc))
            return
        _call_if_alive(self._on_result, result)


def _call_if_alive(callback: Callable[[Any], None] | None, value: Any) -> None:
    """Run a callback whose widgets may have been closed meanwhile (the answer came too late)."""
    if callback is None:
        return
    try:
        callback(value)
    except RuntimeError as exc:
        # shiboken's words for a destroyed Qt object, and Qt's for a signal whose owner is gone
        if "already deleted" not in str(exc) and "Signal source has been deleted" not in str(exc):
            raise


class Handle:
    """Lets the caller drop a result it no longer wants (the volunteer pressed Cancel)."""

    def __init__(self, watcher: _Watcher, future: concurrent.futures.Future[Any]) -> None:
        self._watcher = watcher
        self.future = future

    def cancel(self) -> None:
        self._watcher.cancelled = True
        self.future.cancel()

    def done(self) -> bool:
        return self.future.done()


def watch(
    future: concurrent.futures.Future[Any],
    on_result: ResultCallback | None = None,
    on_error: ErrorCallback | None = None,
) -> Handle:
    """Call ``on_result(value)`` or ``on_error(message)`` on the GUI thread when ``future`` ends."""
    watcher = _Watcher(on_result, on_error)
    _LIVE.add(watcher)
    future.add_done_callback(watcher._done.emit)
    return Handle(watcher, future)


def run_background(
    fn: Callable[[], Any],
    on_result: ResultCallback | None = None,
    on_error: ErrorCallback | None = None,
) -> Handle:
    """Run ``fn()`` on a worker thread; callbacks as in :func:`watch`."""
    return watch(_POOL.submit(fn), on_result, on_error)
