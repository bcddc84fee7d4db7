"""Contribute page: toggles reach the engine; unavailable modes are greyed with the node's reason."""

from __future__ import annotations

from tests.ui.helpers import wait_training


def node_modes(gui) -> tuple[str, ...]:  # noqa: ANN001
    """The modes the node itself last reported (the engine's own record, not the window's)."""
    latest = gui.controller.engine.latest("modes")
    return latest.active if latest is not None else ()


def test_toggling_a_mode_reaches_the_engine(qtbot, shared_gui) -> None:  # noqa: ANN001 (the real runtime)
    wait_training(qtbot, shared_gui)
    page = shared_gui.window.contribute
    row = page.rows["data"]
    row.toggle.setChecked(not row.toggle.isChecked())
    wanted = row.toggle.isChecked()
    qtbot.waitUntil(lambda: ("data" in node_modes(shared_gui)) == wanted, timeout=5_000)
    qtbot.waitUntil(lambda: shared_gui.bridge.latest("modes") is not None
                    and ("data" in shared_gui.bridge.latest("modes").active) == wanted, timeout=5_000)
    row.toggle.setChecked(not wanted)
    qtbot.waitUntil(lambda: ("data" in node_modes(shared_gui)) == (not wanted), timeout=5_000)
    assert row.toggle.isChecked() == (not wanted)


def test_unavailable_mode_is_greyed_with_reason_and_a_refusal_reverts(qtbot, shared_gui) -> None:  # noqa: ANN001
    wait_training(qtbot, shared_gui)
    page = shared_gui.window.contribute
    qtbot.waitUntil(lambda: shared_gui.bridge.latest("modes") is not None, timeout=5_000)
    unavailable = dict(shared_gui.bridge.latest("modes").unavailable)
    assert "inference" in unavailable, "the fixtures' T4 node is too slow to serve inference"
    mode, reason = next(iter(unavailable.items()))
    row = page.rows[mode]
    assert not row.toggle.isEnabled()
    assert reason in row.reason.text()
    # Forcing the toggle (as a stale UI might) is refused by the node and rolled back in the window.
    row.toggle.setEnabled(True)
    row.toggle.setChecked(True)
    qtbot.waitUntil(lambda: "refused" in page.status.text(), timeout=5_000)
    assert not row.toggle.isChecked()
    assert mode not in node_modes(shared_gui)


def test_each_mode_shows_what_it_earned_since_start_or_that_it_had_no_paid_work(qtbot, shared_gui) -> None:  # noqa: ANN001
    """The real node's own EarningsChanged (its ledger's settled rewards) reaches the page."""
    wait_training(qtbot, shared_gui)
    page = shared_gui.window.contribute
    qtbot.waitUntil(lambda: shared_gui.bridge.latest("earnings") is not None
                    and dict(shared_gui.bridge.latest("earnings").by_mode).get("pipeline", 0) > 0, timeout=30_000)
    qtbot.waitUntil(lambda: "Earned since start" in page.rows["pipeline"].earned.text(), timeout=5_000)
    earned = dict(shared_gui.bridge.latest("earnings").by_mode)
    for mode, row in page.rows.items():
        active = mode in shared_gui.bridge.latest("modes").active
        if not earned.get(mode) and active:
            assert "no proven work paid yet" in row.earned.text()
    assert "settled in total" in shared_gui.window.dashboard.lifetime_label.text()
