"""Small helpers shared by the GUI tests."""

from __future__ import annotations

from app.node.events import NodeState


def wait_training(qtbot, gui) -> None:  # noqa: ANN001 (pytest-qt bot, GuiApp)
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.TRAINING, timeout=30_000)


def runtime(gui):  # noqa: ANN001, ANN201 (the runtime behind the engine)
    return gui.controller.engine._runtime
