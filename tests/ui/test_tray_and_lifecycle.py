"""Tray menu (snooze, resume, state icon), close-to-tray, the engine crashing, and a clean quit."""

from __future__ import annotations

import datetime as dt

import pytest

from app.node.events import NodeState
from app.node.runtime.node_runtime import NodeRuntime
from app.ui.app import GuiApp
from app.ui.tray import snooze_until
from tests.ui.funded_ledger import fast_keystore
from tests.ui.helpers import wait_training


def test_snooze_pauses_the_node_and_resume_restarts_it(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    tray = gui.tray
    assert tray.pause_action.isEnabled() and not tray.resume_action.isEnabled()
    assert "Training" in tray.icon.toolTip()
    before = len(tray.notifications)
    tray.snooze_actions["1h"].trigger()
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.PAUSED, timeout=1_000)
    assert tray.resume_action.isEnabled() and "Paused" in tray.icon.toolTip()
    # a reward paid for a step finished before the pause may be announced after "Snoozed"
    titles = [title for title, _ in tray.notifications[before:]]
    assert "Snoozed" in titles, titles
    tray.resume_action.trigger()
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.TRAINING, timeout=2_000)


def test_snooze_times() -> None:
    now = dt.datetime(2026, 11, 23, 21, 30).timestamp()
    assert snooze_until("1h", now) == now + 3600
    assert snooze_until("4h", now) == now + 4 * 3600
    assert snooze_until("tomorrow", now) == dt.datetime(2026, 11, 24, 0, 0).timestamp()
    with pytest.raises(ValueError):
        snooze_until("forever", now)


def test_closing_the_window_keeps_the_node_running_in_the_tray(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    qtbot.waitUntil(lambda: gui.bridge.latest("step") is not None, timeout=5_000)
    gui.window.tray_available = True  # offscreen Qt has no tray; the app sets this from the platform
    gui.window.close()
    assert not gui.window.isVisible() and not gui.quitting
    steps = gui.bridge.latest("step").step
    qtbot.waitUntil(lambda: gui.bridge.latest("step").step > steps + 3, timeout=5_000)
    gui.tray.open_requested.emit()
    assert gui.window.isVisible()


class CrashingRuntime(NodeRuntime):
    """The real runtime, failing after its last step as a device fault would."""

    async def run(self) -> int:
        await super().run()
        raise RuntimeError("simulated device fault")


def test_engine_crash_shows_a_message_and_the_app_keeps_running(qtbot, config, wallet_dir) -> None:  # noqa: ANN001
    config.max_steps = 5
    app = GuiApp(config, runtime_factory=CrashingRuntime, keystore_factory=fast_keystore)
    app.launch()
    qtbot.waitUntil(lambda: app.window.message_bar.isVisible(), timeout=30_000)
    assert "simulated device fault" in app.window.message_bar.text()
    bar = app.window.message_bar
    assert bar.action.isVisibleTo(bar) and bar.action.text() == "Restart the node"
    # the error message and the state change are two events: the badge follows the second one
    qtbot.waitUntil(lambda: app.window.dashboard.badge.state in (NodeState.ERROR, NodeState.STOPPED), timeout=30_000)
    titles = [title for title, _ in app.tray.notifications]  # a reward notice may come after it
    assert "NeuroShard problem" in titles, titles
    qtbot.waitUntil(lambda: app.controller.engine.wait(timeout=0), timeout=10_000)  # its thread ended
    app.window.dashboard.toggle_pause()  # a command to a dead engine is a message, not an exception
    qtbot.waitUntil(lambda: "Could not pause" in app.window.message_bar.text(), timeout=5_000)
    app.window.show_page(2)
    assert app.window.isVisible()
    crashed = app.controller.engine
    app.window.restart_requested.emit()  # what the bar's "Restart the node" button sends
    qtbot.waitUntil(lambda: app.controller.engine not in (None, crashed), timeout=10_000)
    qtbot.waitUntil(lambda: app.bridge.latest("step") is not None and app.bridge.state != NodeState.STOPPED,
                    timeout=30_000)
    app.dispose()


def test_quit_stops_the_engine_cleanly(qtbot, config, wallet_dir) -> None:  # noqa: ANN001
    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    qtbot.waitUntil(lambda: app.bridge.state == NodeState.TRAINING, timeout=30_000)
    engine = app.controller.engine
    app.quit()
    assert engine.wait(timeout=60) and engine.exit_code == 0  # the bound only catches a hang
    assert app.controller.engine is None and engine.state == NodeState.STOPPED
    app.dispose()
