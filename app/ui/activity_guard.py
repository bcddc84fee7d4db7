"""Pause the node while the volunteer's rules say so, resume when they allow it again.

The rules are the volunteer's ResourceLimits: run only when idle (no input for N minutes), a
weekly schedule, pause on battery, pause while listed programs run. They are checked every
``CHECK_MS`` by the app (input idleness is a property of the desktop session, which only the app
sees). The guard pauses through the engine's own Pause command and resumes only what it paused:
a pause the volunteer pressed is never undone by it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import psutil
from PySide6.QtCore import QObject, QTimer, Signal

from app.node.config import ResourceLimits
from app.node.events import NodeState, Pause, Resume
from app.ui.bridge import EngineBridge
from app.ui.idle import idle_seconds
from app.ui.tasks import run_background

CHECK_MS = 10_000  # input idleness is in minutes; checking every 10 s reacts well within one


@dataclass(frozen=True)
class Conditions:
    """What the machine looks like now (gathered by :func:`read_conditions`)."""

    now: dt.datetime
    idle_s: float | None  # None: unknown (treated as "the volunteer is here")
    on_battery: bool
    running: frozenset[str]


def blocking_reason(limits: ResourceLimits, c: Conditions) -> str | None:
    """Why the node must not work now, in the volunteer's words; None when it may."""
    if limits.schedule and not any(day == c.now.weekday() and start <= c.now.hour < end
                                   for day, start, end in limits.schedule):
        return "outside the weekly schedule"
    if limits.pause_on_battery and c.on_battery:
        return "on battery"
    busy = sorted({p for p in limits.pause_when_running if p.lower() in c.running})
    if busy:
        return f"{busy[0]} is running"
    if limits.only_when_idle and (c.idle_s is None or c.idle_s < limits.idle_minutes * 60):
        return f"you are using the computer (runs after {limits.idle_minutes} min without input)"
    return None


def read_conditions(limits: ResourceLimits, idle: Callable[[], float | None] = idle_seconds) -> Conditions:
    """Gather what the rules need (off the GUI thread: listing processes takes tens of ms)."""
    battery = psutil.sensors_battery() if limits.pause_on_battery and hasattr(psutil, "sensors_battery") else None
    names: set[str] = set()
    if limits.pause_when_running:
        for process in psutil.process_iter(["name"]):
            names.add((process.info.get("name") or "").lower().removesuffix(".exe"))
    return Conditions(dt.datetime.now(), idle() if limits.only_when_idle else None,
                      bool(battery is not None and not battery.power_plugged), frozenset(names))


class ActivityGuard(QObject):
    changed = Signal(str)  # the reason the node is held, or "" when it may work

    def __init__(self, bridge: EngineBridge, limits: ResourceLimits,
                 conditions: Callable[[ResourceLimits], Conditions] = read_conditions,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bridge, self.limits, self.conditions = bridge, limits, conditions
        self.reason: str | None = None
        self.holding = False  # the guard's own pause is in force
        self._timer = QTimer(self)
        self._timer.setInterval(CHECK_MS)
        self._timer.timeout.connect(self.check)
        self._timer.start()
        bridge.ready.connect(self.check)

    def set_limits(self, limits: ResourceLimits) -> None:
        self.limits = limits
        self.check()

    def check(self) -> None:
        if self.bridge.engine is None:
            return
        limits = self.limits
        run_background(lambda: blocking_reason(limits, self.conditions(limits)), self._apply,
                       lambda _message: None)

    def _apply(self, reason: str | None) -> None:
        if self.bridge.engine is None:
            return
        if reason and not self.holding and self.bridge.state in (NodeState.TRAINING, NodeState.JOINING):
            self.holding = True
            self.bridge.request(Pause(), None, lambda _m: setattr(self, "holding", False))
        elif not reason and self.holding:
            self.holding = False
            self.bridge.request(Resume(), None, lambda _m: None)
        if reason != self.reason:
            self.reason = reason
            self.changed.emit(reason or "")
