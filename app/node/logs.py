"""Logging for the node: a rotating file in the data dir, and log records as LogLine events.

The Logs view of the app and ``--json-events`` both read LogLine events, so the same lines a
volunteer sees are the ones in ``logs/node.log`` when they send diagnostics.
"""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Callable
from pathlib import Path

from app.node.events import Event, LogLine

LOGGER_NAME = "neuroshard"
LOG_FILE = "node.log"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_file_logging(log_dir: Path, level: str = "INFO") -> Callable[[], None]:
    """Add a rotating file handler (5 x 5 MB) to the ``neuroshard`` logger; returns a remover."""
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        log_dir / LOG_FILE, maxBytes=5 * 2**20, backupCount=5, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, level.upper(), logging.INFO))

    def remove() -> None:
        logger.removeHandler(handler)
        handler.close()

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
