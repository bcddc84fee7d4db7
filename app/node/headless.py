"""Headless mode: the engine without Qt, events printed as log lines or JSON lines.

Human lines go to stderr so stdout stays machine-readable with ``--json-events`` (the devnet
reads it). SIGINT/SIGTERM stop the node cleanly; a second signal exits at once.

With ``[migration] automatic = true`` a server node that hears of an architecture upgrade
(UpgradeAvailable) stops, migrates its data dir (engine.run_migration: backup, growth, adoption;
a failure is rolled back) and starts again on the new version, without anyone at the keyboard.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from app.node.config import NodeConfig
from app.node.engine import EngineError, NodeEngine, run_migration
from app.node.events import (
    ErrorOccurred,
    Event,
    LayersAssigned,
    LogLine,
    StepDone,
    UpgradeAvailable,
    event_to_json,
)

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
    show = _printer(config.json_events)
    stop_requested = threading.Event()
    upgrade = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop_requested.is_set():
            raise SystemExit(130)  # second Ctrl-C: the volunteer wants out now
        stop_requested.set()

    # A driver's ``--max-steps`` counts its steps over the whole run, across a migration's restart
    # (the engine may be cancelled mid-step when it stops, so its own count is not reported then).
    driving, driver_steps = threading.Event(), [0]
    # A forced upgrade (a devnet's --upgrade-at) is migrated to when the run stops by itself: its
    # drivers stop right after that step (assembly.py), the other stages once their drivers left.
    forced = bool((config.training or {}).get("upgrade_at_step"))

    def on_event(event: Event) -> None:
        if isinstance(event, UpgradeAvailable) and config.migration.automatic and event.fits_here:
            upgrade.set()
        elif isinstance(event, LayersAssigned):
            driving.set() if "driver" in event.roles else driving.clear()
        elif isinstance(event, StepDone) and driving.is_set():
            driver_steps[0] += 1

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            engine = NodeEngine(config)
            engine.subscribe(show)
            engine.subscribe(on_event)
            try:
                engine.start()
            except EngineError as exc:
                print(f"neuroshard: error: {exc}", file=sys.stderr)
                return 2
            while not engine.wait(timeout=0.2):
                if stop_requested.is_set():
                    sys.stderr.write("stopping (finishing the current step)...\n")
                    break
                if upgrade.is_set() and not forced:
                    sys.stderr.write("migrating to the new architecture (automatic = true)...\n")
                    break
            if not engine.stop(timeout=10.0):
                engine.emit(ErrorOccurred(message="the node did not stop within 10 s", fatal=True))
                return 1
            if not upgrade.is_set() or stop_requested.is_set():
                # a fault's code (disk full, unusable checkpoints) wins over the signal that came after it
                return engine.exit_code or 0
            upgrade.clear()
            _migrate(config, show)
            if config.max_steps is not None and driver_steps[0]:  # the new version trains the steps left
                left = config.max_steps - driver_steps[0]
                if left <= 0:
                    return engine.exit_code or 0
                config, driver_steps[0] = dataclasses.replace(config, max_steps=left), 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _migrate(config: NodeConfig, show: Callable[[Event], None]) -> None:
    """Migrate the stopped node; a failure is rolled back (the node restarts on the old version)."""
    try:
        result = run_migration(config, show, distill_steps=config.migration.distill_steps)
    except EngineError as exc:
        show(ErrorOccurred(message=f"automatic migration did not happen: {exc}", fatal=False))
        return
    show(LogLine(level="INFO", message=f"migrated to architecture version {result['version_after']}"))
