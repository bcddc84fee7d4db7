"""NodeController: owns the engine's lifecycle for the window (start, restart after a crash, stop).

Stopping waits for the engine thread (up to a few seconds while it checkpoints), so a restart
stops the old engine on a worker thread and starts the new one when that is done; only quitting
waits on the GUI thread, when there is nothing left to draw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from app.node.config import NodeConfig
from app.node.engine import EngineError, NodeEngine
from app.node.events import ErrorOccurred
from app.node.runtime_api import RuntimeFactory
from app.ui.bridge import EngineBridge
from app.ui.start_checks import port_for_start
from app.ui.tasks import run_background

log = logging.getLogger("neuroshard.ui")
STOP_TIMEOUT_S = 8.0  # the runtime has 4 s to shut down (engine.py) plus checkpoint write time


class NodeController(QObject):
    started = Signal()
    start_failed = Signal(str)
    notice = Signal(str)  # something the volunteer should know about this start (a port fallback)

    def __init__(self, bridge: EngineBridge, config: NodeConfig,
                 runtime_factory: RuntimeFactory | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.config = config
        self.runtime_factory = runtime_factory
        self.engine: NodeEngine | None = None

    def start(self) -> bool:
        """Create and start a fresh engine; a failure becomes a message, never an exception."""
        config, note = port_for_start(self.config)
        try:
            engine = NodeEngine(config, self.runtime_factory)
            engine.start()
        except (EngineError, ValueError, OSError) as exc:
            message = f"The node could not start: {exc}"
            self.bridge.inject(ErrorOccurred(message=message, fatal=True))
            self.start_failed.emit(message)
            return False
        self.engine = engine
        self.bridge.attach(engine)
        self.started.emit()
        if note:
            self.notice.emit(note)
        return True

    def restart(self, config: NodeConfig | None = None) -> None:
        """Stop the current engine off the GUI thread, then start a new one (with ``config``)."""
        if config is not None:
            self.config = config
        old, self.engine = self.engine, None
        self.bridge.detach()
        if old is None:
            self.start()
            return
        run_background(lambda: old.stop(STOP_TIMEOUT_S), lambda _ok: self.start(),
                       lambda message: self.start_failed.emit(message))

    def stop_in_background(self, on_stopped: Callable[[bool], None]) -> None:
        """Stop the engine off the GUI thread, then ``on_stopped(ended_in_time)`` on it."""
        engine, self.engine = self.engine, None
        self.bridge.detach()
        if engine is None:
            on_stopped(True)
            return
        run_background(lambda: engine.stop(STOP_TIMEOUT_S), on_stopped, lambda _message: on_stopped(False))

    def stop(self) -> bool:
        """Stop and wait (used when quitting); True if the engine ended in time."""
        engine, self.engine = self.engine, None
        self.bridge.detach()
        if engine is None:
            return True
        ended = engine.stop(STOP_TIMEOUT_S)
        if not ended:
            log.warning("the node did not stop within %.0f s", STOP_TIMEOUT_S)
        return ended
