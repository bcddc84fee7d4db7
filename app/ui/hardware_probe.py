"""The wizard's hardware check, done by the engine itself.

Before the volunteer has chosen modes and limits the node must not join anything, so the probe
runs a NodeEngine with an *idle* runtime: the engine measures the machine exactly as it does at
every start (and caches the result in ``hardware.json``, so the real start later is instant),
publishes ``HardwareMeasured``, and then waits until the probe stops it. The UI still speaks only
in engine events; torch is imported on the engine's thread.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from app.node.config import NodeConfig
from app.node.engine import NodeEngine
from app.node.events import Command, ErrorOccurred, HardwareMeasured, NodeState, StatusChanged
from app.node.runtime_api import RuntimeContext
from app.ui.bridge import EngineBridge
from app.ui.tasks import run_background

# The engine's benchmark takes a warm-up and up to three passes within an 8 s budget
# (hardware.measure_ms_per_layer) plus ~2 s to import torch; the bar is paced on 12 s and never
# claims to be done before the result is in.
EXPECTED_MEASURE_S = 12.0


class IdleRuntime:
    """A runtime that does nothing until stopped (Runtime protocol, app/node/runtime_api.py)."""

    steps_done = 0

    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx

    async def run(self) -> int:
        while await self.ctx.control.sleep(0.5):
            pass
        return 0

    async def handle(self, command: Command) -> Any:
        raise RuntimeError(f"the hardware check does not handle '{command.name}'")

    async def shutdown(self) -> None:
        return None


class HardwareProbe(QObject):
    progress = Signal(int, str)  # percent, words
    measured = Signal(object)  # HardwareMeasured
    failed = Signal(str)

    def __init__(self, config: NodeConfig, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.config = config
        self.bridge = EngineBridge(self)
        self.engine: NodeEngine | None = None
        self.result: HardwareMeasured | None = None
        self._began = 0.0
        self._timer = QTimer(self)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._tick)
        self.bridge.hardware.connect(self._on_hardware)
        self.bridge.status.connect(self._on_status)
        self.bridge.error.connect(self._on_error)

    def start(self) -> None:
        self.result = None
        self._began = time.monotonic()
        self.progress.emit(1, "Starting the node engine…")
        try:
            self.engine = NodeEngine(self.config, IdleRuntime)
            self.engine.start()
        except Exception as exc:  # a bad data dir or config: say so, the wizard can continue
            self.failed.emit(f"The hardware check could not start: {exc}")
            return
        self.bridge.attach(self.engine)
        self._timer.start()

    def _tick(self) -> None:
        elapsed = time.monotonic() - self._began
        self.progress.emit(min(95, int(elapsed / EXPECTED_MEASURE_S * 100)), "Measuring one reference layer…")

    def _on_status(self, event: StatusChanged) -> None:
        if event.state == NodeState.MEASURING:
            self.progress.emit(5, "Measuring one reference layer…")

    def _on_hardware(self, event: HardwareMeasured) -> None:
        self.result = event
        self._timer.stop()
        self.progress.emit(100, "Done")
        self.measured.emit(event)
        self.stop()

    def _on_error(self, event: ErrorOccurred) -> None:
        if self.result is None:
            self._timer.stop()
            self.failed.emit(event.message)
            self.stop()

    def cancel(self) -> None:
        self._timer.stop()
        self.stop()

    def stop(self) -> None:
        """Stop the probe engine off the GUI thread (its thread may still be benchmarking)."""
        engine, self.engine = self.engine, None
        self.bridge.detach()
        if engine is not None:
            run_background(lambda: engine.stop(15.0))
