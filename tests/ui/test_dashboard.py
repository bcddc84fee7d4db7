"""Dashboard against a real engine: state in words, live charts, and pause that really pauses."""

from __future__ import annotations

from app.node.events import NodeState, ProofAccepted, ProofRefused
from app.ui import plain_words
from app.ui.widgets.state_badge import WARNING_COLOUR
from tests.ui.helpers import wait_training


def test_dashboard_shows_state_tier_layers_and_live_loss(qtbot, shared_gui) -> None:  # noqa: ANN001
    wait_training(qtbot, shared_gui)
    page = shared_gui.window.dashboard
    qtbot.waitUntil(lambda: page.loss_chart.point_count() >= 5, timeout=10_000)
    assert page.badge.text().startswith("Training")
    layers = shared_gui.bridge.latest("layers")
    held = layers.last_layer - layers.first_layer
    assert page.layers_label.text().startswith(f"{held} of {layers.total_layers}")
    assert page.role_label.text() == plain_words.roles(layers.roles).words  # the expert terms in the tooltip
    assert all(role in page.role_label.toolTip() for role in layers.roles)
    hw = shared_gui.bridge.latest("hardware")
    assert page.tier_label.text().lower().startswith(plain_words.tier(hw.tier).words)
    assert f"tier {hw.tier}" in page.tier_label.toolTip()
    assert page.activity_label.text().startswith("Now: ")
    qtbot.waitUntil(lambda: page.loss_chart.series.count() > 0, timeout=2_000)


def test_pause_stops_training_and_resume_restarts_it(qtbot, shared_gui) -> None:  # noqa: ANN001
    """How quickly a pause lands on a quiet machine is measured apart (tests/ui/test_responsiveness.py
    and the engine's own pause test); here: the click pauses the node, and training holds."""
    wait_training(qtbot, shared_gui)
    page = shared_gui.window.dashboard
    steps: list[int] = []
    shared_gui.bridge.step.connect(lambda e: steps.append(e.step))
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=60_000)
    page.pause_button.click()
    qtbot.waitUntil(lambda: shared_gui.bridge.state == NodeState.PAUSED, timeout=30_000)
    at_pause = len(steps)
    assert page.badge.text().startswith("Paused")
    assert page.pause_button.text() == "Resume"
    qtbot.wait(800)
    # the one step in flight when the pause arrived may still report (however slow the machine),
    # a second one would mean training went on
    assert len(steps) <= at_pause + 1, "training continued while paused"
    held = len(steps)
    page.pause_button.click()
    qtbot.waitUntil(lambda: len(steps) > held + 2, timeout=60_000)
    qtbot.waitUntil(lambda: shared_gui.bridge.state == NodeState.TRAINING, timeout=30_000)
    assert page.pause_button.text() == "Pause"


def test_refused_work_turns_the_badge_amber_until_that_kind_is_accepted_again(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    page, engine = gui.window.dashboard, gui.controller.engine
    green = page.badge.styleSheet()
    engine.emit(ProofRefused(proof_kind="training", epoch=7, reason="claimed more work than it did"))
    qtbot.waitUntil(lambda: "training work refused: claimed more work" in page.badge.text(), timeout=5_000)
    assert page.badge.styleSheet() != green and WARNING_COLOUR in page.badge.styleSheet()
    seen = []
    gui.bridge.proof.connect(seen.append)
    engine.emit(ProofAccepted(proof_kind="uptime", epoch=8, reward_units=1))
    qtbot.waitUntil(lambda: any(e.proof_kind == "uptime" and e.epoch == 8 for e in seen), timeout=5_000)
    assert "training work refused" in page.badge.text()  # uptime does not excuse refused training
    engine.emit(ProofAccepted(proof_kind="training", epoch=8, reward_units=1))
    qtbot.waitUntil(lambda: "refused" not in page.badge.text(), timeout=5_000)
    assert WARNING_COLOUR not in page.badge.styleSheet()
