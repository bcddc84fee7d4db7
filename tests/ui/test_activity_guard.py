"""The volunteer's rules (idle only, schedule, battery, programs, full screen) pause and resume the
real node, and the volunteer's presence switches the caps the real engine is told."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from app.node.config import ResourceLimits, UsageCaps
from app.node.events import Command, NodeState, SetUsageCaps
from app.ui.activity_guard import Conditions, blocking_reason, decide, describe_caps, read_conditions
from tests.ui.helpers import wait_training

MONDAY_10H = dt.datetime(2026, 11, 23, 10, 0)


def conditions(**changes: object) -> Conditions:
    base = Conditions(now=MONDAY_10H, idle_s=3600.0, on_battery=False, running=frozenset({"bash"}))
    return dataclasses.replace(base, **changes)


def test_rules_give_the_reason_the_node_must_wait() -> None:
    limits = ResourceLimits(pause_on_battery=True)
    assert blocking_reason(limits, conditions()) is None
    assert blocking_reason(limits, conditions(on_battery=True)) == "on battery"
    idle_only = dataclasses.replace(limits, only_when_idle=True, idle_minutes=5)
    assert "using the computer" in blocking_reason(idle_only, conditions(idle_s=120.0))
    assert "using the computer" in blocking_reason(idle_only, conditions(idle_s=None))  # unknown = present
    assert blocking_reason(idle_only, conditions(idle_s=301.0)) is None
    scheduled = dataclasses.replace(limits, schedule=((0, 9, 17),))
    assert blocking_reason(scheduled, conditions()) is None
    assert blocking_reason(scheduled, conditions(now=MONDAY_10H.replace(hour=18))) == "outside the weekly schedule"
    assert blocking_reason(scheduled, conditions(now=MONDAY_10H + dt.timedelta(days=1))) is not None
    games = dataclasses.replace(limits, pause_when_running=("Steam",))
    assert blocking_reason(games, conditions(running=frozenset({"steam"}))) == "Steam is running"


def test_idle_only_pauses_while_the_volunteer_types_and_resumes_when_idle(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    guard = gui.guard
    idle = {"s": 10.0}
    guard.conditions = lambda limits: conditions(idle_s=idle["s"])
    guard.set_limits(dataclasses.replace(gui.config.limits, only_when_idle=True, idle_minutes=1))
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.PAUSED, timeout=10_000)  # guard logic, not latency (test_dashboard pins pause within 1 s)
    assert "using the computer" in gui.window.dashboard.hold_label.text()
    idle["s"] = 120.0
    guard.check()
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.TRAINING, timeout=10_000)  # guard logic, not latency (test_dashboard pins pause within 1 s)
    assert not gui.window.dashboard.hold_label.isVisibleTo(gui.window.dashboard)


IN_USE = UsageCaps(cpu_threads=1, cpu_share=0.3, gpu_share=0.5, upload_bytes_per_s=2**20)


def test_full_screen_pauses_only_when_asked_and_known() -> None:
    limits = ResourceLimits(pause_on_battery=False, pause_when_fullscreen=True)
    assert blocking_reason(limits, conditions(fullscreen=True)) == "a full-screen app is running"
    assert blocking_reason(limits, conditions(fullscreen=False)) is None
    # Unknown (macOS, Wayland-only, no window manager) never pauses: the node would never run there.
    assert blocking_reason(limits, conditions(fullscreen=None)) is None
    assert blocking_reason(dataclasses.replace(limits, pause_when_fullscreen=False), conditions(fullscreen=True)) is None


def test_presence_picks_the_caps() -> None:
    limits = ResourceLimits(idle_minutes=2, in_use=IN_USE)
    assert decide(limits, conditions(idle_s=30.0)).caps == IN_USE
    assert decide(limits, conditions(idle_s=30.0)).in_use is True
    assert decide(limits, conditions(idle_s=121.0)).caps == limits.caps(in_use=False)
    assert decide(limits, conditions(idle_s=None)).caps == IN_USE  # unknown: the volunteer may be there
    same = dataclasses.replace(limits, in_use=None)
    assert decide(same, conditions(idle_s=30.0)).caps == same.caps(in_use=False)
    # only_when_idle: in use means paused, so the idle caps stay (no churn under the pause)
    idle_only = dataclasses.replace(limits, only_when_idle=True)
    verdict = decide(idle_only, conditions(idle_s=30.0))
    assert verdict.reason is not None and verdict.caps == idle_only.caps(in_use=False)
    assert describe_caps(limits, True, IN_USE) == \
        "While you use the computer — 30 % CPU, 1 thread, 50 % GPU, upload 1 MB/s"
    assert describe_caps(limits, False, limits.caps()) == "While the computer is idle — 100 % CPU, all but one core"
    assert describe_caps(same, True, same.caps()) == "The same at all times — 100 % CPU, all but one core"
    assert describe_caps(idle_only, False, idle_only.caps()).startswith("While the computer is idle (the only")


def test_reading_conditions_asks_for_full_screen_only_when_the_rule_is_on() -> None:
    asked: list[str] = []

    def fullscreen() -> bool | None:
        asked.append("fullscreen")
        return True

    off = read_conditions(ResourceLimits(pause_on_battery=False), idle=lambda: 42.0, fullscreen=fullscreen)
    assert (off.idle_s, off.fullscreen, asked) == (42.0, None, [])
    on = read_conditions(ResourceLimits(pause_on_battery=False, pause_when_fullscreen=True),
                         idle=lambda: None, fullscreen=fullscreen)
    assert (on.idle_s, on.fullscreen, asked) == (None, True, ["fullscreen"])


def record_commands(monkeypatch: pytest.MonkeyPatch, gui) -> list[Command]:  # noqa: ANN001
    """Every command the app posts to the real engine, which still receives and runs each one."""
    engine = gui.controller.engine
    post, sent = engine.post, []

    def recording_post(command: Command):  # noqa: ANN202 (the engine's future)
        sent.append(command)
        return post(command)

    monkeypatch.setattr(engine, "post", recording_post)
    return sent


def caps_sent(sent: list[Command]) -> list[UsageCaps]:
    return [c.caps for c in sent if isinstance(c, SetUsageCaps)]


def check_once(qtbot, guard):  # noqa: ANN001, ANN201 (pytest-qt bot, ActivityGuard -> Verdict)
    with qtbot.waitSignal(guard.checked, timeout=10_000) as blocker:  # a background read, not latency
        guard.check()
    return blocker.args[0]


def test_presence_flips_send_the_in_use_and_idle_caps_once_each(qtbot, gui, monkeypatch) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    guard = gui.guard
    # Once at start: the caps in force are sent as soon as the node answers commands.
    qtbot.waitUntil(lambda: guard.caps is not None, timeout=10_000)  # a background read, not latency
    assert guard.caps == gui.config.limits.caps(in_use=False)  # the default config has one set only
    sent = record_commands(monkeypatch, gui)
    texts: list[str] = []
    guard.caps_changed.connect(texts.append)
    idle = {"s": 600.0}
    guard.conditions = lambda limits: conditions(idle_s=idle["s"])
    limits = dataclasses.replace(gui.config.limits, idle_minutes=1, in_use=IN_USE)
    with qtbot.waitSignal(guard.checked, timeout=10_000):
        guard.set_limits(limits)
    # Away from the keyboard the idle caps hold, and those were sent at start: nothing new to send.
    assert caps_sent(sent) == [] and guard.caps == limits.caps(in_use=False)
    idle["s"] = 10.0  # the volunteer touches the mouse
    assert check_once(qtbot, guard).in_use is True
    check_once(qtbot, guard)  # no change: nothing more sent
    assert caps_sent(sent) == [IN_USE]
    assert texts[-1] == "While you use the computer — 30 % CPU, 1 thread, 50 % GPU, upload 1 MB/s"
    assert gui.window.dashboard.limits_label.text() == texts[-1]  # the window shows what is in force
    idle["s"] = 120.0  # gone for two minutes
    check_once(qtbot, guard)
    check_once(qtbot, guard)
    assert caps_sent(sent) == [IN_USE, limits.caps(in_use=False)]
    assert texts[-1] == "While the computer is idle — 100 % CPU, all but one core"
    assert gui.bridge.state == NodeState.TRAINING  # caps switch; only only_when_idle pauses
    # Two overlapping checks answering out of order: the older reading must not undo the newer.
    newer, older = decide(limits, conditions(idle_s=5.0)), decide(limits, conditions(idle_s=600.0))
    guard._apply((guard._asked + 2, limits, newer))
    guard._apply((guard._asked + 1, limits, older))
    assert caps_sent(sent)[-1] == IN_USE and guard.caps == IN_USE


def test_a_full_screen_app_pauses_the_node_and_leaving_it_resumes(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    guard = gui.guard
    screen: dict[str, bool | None] = {"full": None}
    guard.conditions = lambda limits: conditions(fullscreen=screen["full"] if limits.pause_when_fullscreen else None)
    with qtbot.waitSignal(guard.checked, timeout=10_000):
        guard.set_limits(dataclasses.replace(gui.config.limits, pause_when_fullscreen=True))
    assert gui.bridge.state == NodeState.TRAINING  # unknown: keeps working
    screen["full"] = True
    guard.check()
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.PAUSED, timeout=10_000)  # guard logic, not latency
    assert "full-screen" in gui.window.dashboard.hold_label.text()
    screen["full"] = False
    guard.check()
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.TRAINING, timeout=10_000)  # guard logic, not latency
    assert not gui.window.dashboard.hold_label.isVisibleTo(gui.window.dashboard)
