"""Pause the node while the volunteer's rules say so, and switch its caps with their presence.

The rules are the volunteer's ResourceLimits: run only when idle (no input for N minutes), a
weekly schedule, pause on battery, pause while listed programs or a full-screen app run. They
are checked every ``CHECK_MS`` by the app (input idleness and the full-screen window are
properties of the desktop session, which only the app sees). The guard pauses through the
engine's own Pause command and resumes only what it paused: a pause the volunteer pressed is
never undone by it.

Presence also picks the caps (threads, CPU/GPU share, bandwidth): the in-use set while there was
input within ``idle_minutes``, the idle set otherwise (``ResourceLimits.caps``). The guard sends
``SetUsageCaps`` once the node answers, then only when the caps in force change, and says what
is in force through ``caps_changed``. Unknown idleness (Wayland, headless) counts as "in use",
the side that takes less from the volunteer; an unknown full-screen state never pauses (see
app/ui/fullscreen.py).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import psutil
from PySide6.QtCore import QObject, QTimer, Signal

from app.node.config import ResourceLimits, UsageCaps
from app.node.events import NodeState, Pause, Resume, SetUsageCaps
from app.ui.bridge import EngineBridge
from app.ui.fullscreen import fullscreen_app_running
from app.ui.idle import idle_seconds
from app.ui.tasks import run_background

log = logging.getLogger(__name__)

CHECK_MS = 10_000  # input idleness is in minutes; checking every 10 s reacts well within one


@dataclass(frozen=True)
class Conditions:
    """What the machine looks like now (gathered by :func:`read_conditions`)."""

    now: dt.datetime
    idle_s: float | None  # None: unknown (treated as "the volunteer is here")
    on_battery: bool
    running: frozenset[str]
    fullscreen: bool | None = None  # None: unknown or not asked (never pauses)


@dataclass(frozen=True)
class Verdict:
    """What the guard does about one reading: hold the node or not, and the caps in force."""

    reason: str | None
    in_use: bool
    caps: UsageCaps


def in_use(limits: ResourceLimits, c: Conditions) -> bool:
    """The volunteer is at the computer: input within ``idle_minutes``, or we cannot tell."""
    return c.idle_s is None or c.idle_s < limits.idle_minutes * 60


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
    if limits.pause_when_fullscreen and c.fullscreen is True:
        return "a full-screen app is running"
    if limits.only_when_idle and in_use(limits, c):
        return f"you are using the computer (runs after {limits.idle_minutes} min without input)"
    return None


def decide(limits: ResourceLimits, c: Conditions) -> Verdict:
    """The whole decision for one reading. With only_when_idle the node is paused while in use,
    so the idle caps stay in force (switching caps under a pause would only churn the engine)."""
    present = in_use(limits, c)
    return Verdict(blocking_reason(limits, c), present,
                   limits.caps(in_use=present and not limits.only_when_idle))


def describe_caps(limits: ResourceLimits, present: bool, caps: UsageCaps) -> str:
    """Which set of limits applies now and what it allows, for the dashboard and settings, e.g.
    "While you use the computer — 30 % CPU, 2 threads, upload 1 MB/s"."""
    if limits.only_when_idle:
        label = "While the computer is idle (the only time it runs)"
    elif limits.in_use is None:
        label = "The same at all times"
    else:
        label = "While you use the computer" if present else "While the computer is idle"
    parts = [f"{round(caps.cpu_share * 100)} % CPU"]
    if caps.cpu_threads is None:
        parts.append("all but one core")
    else:
        parts.append(f"{caps.cpu_threads} thread{'s' if caps.cpu_threads > 1 else ''}")
    if caps.gpu_share < 1.0:
        parts.append(f"{round(caps.gpu_share * 100)} % GPU")
    for name, value in (("upload", caps.upload_bytes_per_s), ("download", caps.download_bytes_per_s)):
        if value is not None:
            parts.append(f"{name} {_rate(value)}")
    return f"{label} — {', '.join(parts)}"


def _rate(bytes_per_s: int) -> str:
    if bytes_per_s >= 2**20:
        return f"{bytes_per_s / 2**20:g} MB/s"
    return f"{bytes_per_s // 2**10} KB/s"


def read_conditions(limits: ResourceLimits, idle: Callable[[], float | None] = idle_seconds,
                    fullscreen: Callable[[], bool | None] = fullscreen_app_running) -> Conditions:
    """Gather what the rules need (off the GUI thread: listing processes takes tens of ms)."""
    battery = psutil.sensors_battery() if limits.pause_on_battery and hasattr(psutil, "sensors_battery") else None
    names: set[str] = set()
    if limits.pause_when_running:
        for process in psutil.process_iter(["name"]):
            names.add((process.info.get("name") or "").lower().removesuffix(".exe"))
    # Idleness is read always: it picks the caps even when only_when_idle is off.
    return Conditions(dt.datetime.now(), idle(), bool(battery is not None and not battery.power_plugged),
                      frozenset(names), fullscreen() if limits.pause_when_fullscreen else None)


class ActivityGuard(QObject):
    changed = Signal(str)  # the reason the node is held, or "" when it may work
    caps_changed = Signal(str)  # the caps in force, in words (describe_caps)
    checked = Signal(object)  # the Verdict of every check, after it was acted on

    def __init__(self, bridge: EngineBridge, limits: ResourceLimits,
                 conditions: Callable[[ResourceLimits], Conditions] = read_conditions,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bridge, self.limits, self.conditions = bridge, limits, conditions
        self.reason: str | None = None
        self.holding = False  # the guard's own pause is in force
        self.in_use: bool | None = None  # the volunteer's presence at the last check
        self.caps: UsageCaps | None = None  # what the engine was last told (None: nothing yet)
        self.caps_text = ""
        self._caps_error = ""  # the last SetUsageCaps failure, logged once
        self._asked = self._applied = 0  # check numbers: a reading older than the one acted on is dropped
        self._timer = QTimer(self)
        self._timer.setInterval(CHECK_MS)
        self._timer.timeout.connect(self.check)
        self._timer.start()
        bridge.attached.connect(self._forget_caps)
        bridge.ready.connect(self.check)

    def set_limits(self, limits: ResourceLimits) -> None:
        self.limits = limits
        self.check()

    def check(self) -> None:
        if self.bridge.engine is None:
            return
        limits = self.limits
        self._asked += 1
        number = self._asked
        # Two checks can overlap (the timer and a settings save); the older answer must not undo the newer.
        run_background(lambda: (number, limits, decide(limits, self.conditions(limits))), self._apply,
                       lambda message: log.warning("could not read the activity conditions: %s", message))

    def _forget_caps(self) -> None:
        """A new engine starts from its config's caps: tell it ours again once it answers."""
        self.caps = None

    def _apply(self, outcome: tuple[int, ResourceLimits, Verdict]) -> None:
        number, limits, verdict = outcome
        if self.bridge.engine is None or number < self._applied:
            return
        self._applied = number
        self._send_caps(limits, verdict)
        reason = verdict.reason
        if reason and not self.holding and self.bridge.state in (NodeState.TRAINING, NodeState.JOINING):
            self.holding = True
            self.bridge.request(Pause(), None, lambda _m: setattr(self, "holding", False))
        elif not reason and self.holding:
            self.holding = False
            self.bridge.request(Resume(), None, lambda _m: None)
        if reason != self.reason:
            self.reason = reason
            self.changed.emit(reason or "")
        self.checked.emit(verdict)

    def _send_caps(self, limits: ResourceLimits, verdict: Verdict) -> None:
        self.in_use = verdict.in_use
        text = describe_caps(limits, verdict.in_use, verdict.caps)
        if text != self.caps_text:
            self.caps_text = text
            self.caps_changed.emit(text)
        # Before the runtime answers, commands fail ("still starting"); ``ready`` checks again.
        if verdict.caps == self.caps or not self.bridge.is_ready:
            return
        self.caps = verdict.caps
        self.bridge.request(SetUsageCaps(verdict.caps), None, self._caps_failed)

    def _caps_failed(self, message: str) -> None:
        # Not the message bar: this happens on its own, without the volunteer asking, and the node
        # keeps working under its previous caps. Logged once per distinct failure. Not retried at
        # every check (an engine that refuses would be asked every 10 s); the next change of
        # presence or limits, or the next engine, sends again.
        if message != self._caps_error:
            self._caps_error = message
            log.warning("the node did not take the usage caps: %s", message)
