"""Small helpers shared by the GUI tests."""

from __future__ import annotations

from app.node.events import NodeState


def wait_training(qtbot, gui) -> None:  # noqa: ANN001 (pytest-qt bot, GuiApp)
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.TRAINING, timeout=60_000)


def runtime(gui):  # noqa: ANN001, ANN201 (the NodeRuntime behind the engine)
    return gui.controller.engine._runtime


def economy(gui):  # noqa: ANN001, ANN201 (the node's EconomyService: its ledger and wallet session)
    service = runtime(gui).economy.service
    assert service is not None, "the node's economy did not start"
    return service
