"""Logging for the node: a rotating file in the data dir, and log records as LogLine events.

The Logs view of the app and ``--json-events`` both read LogLine events, so the same lines a
volunteer sees are the ones in ``logs/node.log`` when they send diagnostics.

A full disk must not take logging (or the thread closing the log) down with it: the file handler
stops writing to its file at the first "no space" error, reports it once (app/node/faults.py, the
engine then stops cleanly) instead of printing "--- Logging error ---" for every later line, and
its close never raises. Lines still reach the events (the window, stderr). Sites that catch a
disk-full error and only log it are spotted too (``attach_disk_full_spotter``), so a full disk
anywhere stops the node.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
from collections.abc import Callable
from pathlib import Path

from app.node.events import Event, LogLine
from app.node.faults import is_disk_full, report_disk_full

LOGGER_NAME = "neuroshard"
LOG_FILE = "node.log"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_file_logging(log_dir: Path, level: str = "INFO") -> Callable[[], None]:
    """Add a rotating file handler (5 x 5 MB) to the ``neuroshard`` logger; returns a remover."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = _DiskSafeFileHandler(log_dir / LOG_FILE, maxBytes=5 * 2**20, backupCount=5, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, level.upper(), logging.INFO))

    def remove() -> None:
        logger.removeHandler(handler)
        handler.close()

    return remove


class _DiskSafeFileHandler(logging.handlers.RotatingFileHandler):
    """Rotating file log that goes quiet, once, when the disk is full (see the module docstring)."""

    full = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.full:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        exc = sys.exc_info()[1]
        if not is_disk_full(exc):
            super().handleError(record)
            return
        self.full = True
        self._drop_stream()
        assert exc is not None
        report_disk_full(f"the log file {self.baseFilename}", exc)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # flushing a full disk fails: the lines are lost, not the node
            super().close()
        self._drop_stream()

    def _drop_stream(self) -> None:
        stream, self.stream = self.stream, None  # type: ignore[assignment]
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class _DiskFullSpotter(logging.Handler):
    """Reports a disk-full error that some site caught and logged (with exc_info) instead of raising."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_disk_full(exc):
            report_disk_full(record.name, exc)


def attach_disk_full_spotter() -> Callable[[], None]:
    """Watch the node's loggers, and asyncio's (an exception nobody awaited ends up there)."""
    handler = _DiskFullSpotter()
    loggers = [logging.getLogger(LOGGER_NAME), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addHandler(handler)

    def remove() -> None:
        for logger in loggers:
            logger.removeHandler(handler)

    return remove


class _EventHandler(logging.Handler):
    def __init__(self, emit: Callable[[Event], None]) -> None:
        super().__init__(logging.INFO)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit(LogLine(level=record.levelname, message=record.getMessage()))
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def attach_event_handler(emit: Callable[[Event], None]) -> Callable[[], None]:
    """Forward INFO and above from the ``neuroshard`` logger as LogLine events."""
    handler = _EventHandler(emit)
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    return lambda: logger.removeHandler(handler)
