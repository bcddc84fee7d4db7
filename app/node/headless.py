"""Headless mode: the engine without Qt, events printed as log lines or JSON lines.

Human lines go to stderr so stdout stays machine-readable with ``--json-events`` (the devnet
reads it). SIGINT/SIGTERM stop the node cleanly; a second signal exits at once.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType

from app.node.config import NodeConfig
from app.node.engine import EngineError, NodeEngine
from app.node.events import ErrorOccurred, Event, LogLine, StepDone, event_to_json

_QUIET_KINDS = frozenset({"log"})  # already written to the log file; shown only at WARNING and up


def _printer(json_events: bool):
    lock = threading.Lock()

    def show(event: Event) -> None:
        with lock:
            if json_events:
                sys.stdout.write(event_to_json(event) + "\n")
                sys.stdout.flush()
                return
            if event.kind in _QUIET_KINDS and isinstance(event, LogLine) and event.level in ("INFO", "DEBUG"):
                return
            stamp = time.strftime("%H:%M:%S", time.localtime(event.timestamp))
            if isinstance(event, StepDone):
                line = f"step {event.step}: loss {event.loss:.4f}, {event.tokens_per_s:,.0f} tokens/s"
            else:
                line = event.describe()
            sys.stderr.write(f"{stamp} {line}\n")
            sys.stderr.flush()

    return show


def run_headless(config: NodeConfig) -> int:
    """Run the node until it finishes (``--max-steps``) or a signal arrives; returns the exit code."""
    engine = NodeEngine(config)
    engine.subscribe(_printer(config.json_events))
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop_requested.is_set():
            raise SystemExit(130)  # second Ctrl-C: the volunteer wants out now
        stop_requested.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            engine.start()
        except EngineError as exc:
            print(f"neuroshard: error: {exc}", file=sys.stderr)
            return 2
        while not engine.wait(timeout=0.2):
            if stop_requested.is_set():
                sys.stderr.write("stopping (finishing the current step)...\n")
                break
        if not engine.stop(timeout=10.0):
            engine.emit(ErrorOccurred(message="the node did not stop within 10 s", fatal=True))
            return 1
        # a fault's code (disk full, unusable checkpoints) wins over the signal that came after it
        return engine.exit_code or 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
