"""Contribute page: toggles reach the engine; unavailable modes are greyed with the node's reason."""

from __future__ import annotations

from tests.ui.helpers import runtime, wait_training


def test_toggling_a_mode_reaches_the_engine(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    page = gui.window.contribute
    qtbot.waitUntil(lambda: page.rows["data"].toggle.isChecked(), timeout=5_000)
    page.rows["data"].toggle.setChecked(False)
    qtbot.waitUntil(lambda: "data" not in runtime(gui).active_modes, timeout=5_000)
    assert "data" not in gui.controller.engine.latest("modes").active
    qtbot.waitUntil(lambda: "data" not in page.status.text(), timeout=2_000)
    page.rows["data"].toggle.setChecked(True)
    qtbot.waitUntil(lambda: "data" in runtime(gui).active_modes, timeout=5_000)


def test_unavailable_mode_is_greyed_with_reason_and_a_refusal_reverts(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    page = gui.window.contribute
    qtbot.waitUntil(lambda: gui.bridge.latest("modes") is not None, timeout=5_000)
    unavailable = dict(gui.bridge.latest("modes").unavailable)
    assert unavailable, "this devnet machine should lack at least one mode"
    mode, reason = next(iter(unavailable.items()))
    row = page.rows[mode]
    assert not row.toggle.isEnabled()
    assert reason in row.reason.text()
    # Forcing the toggle (as a stale UI might) is refused by the node and rolled back in the window.
    row.toggle.setEnabled(True)
    row.toggle.setChecked(True)
    qtbot.waitUntil(lambda: "refused" in page.status.text(), timeout=5_000)
    assert not row.toggle.isChecked()
    assert mode not in runtime(gui).active_modes
