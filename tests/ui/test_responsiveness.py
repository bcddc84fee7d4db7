"""What keeps the GUI thread responsive while the node trains, asserted without a clock (issue 7).

How long the event loop is blocked is a measurement, not a test: benchmarks/gui_responsiveness.py
samples it with the node paused and training in the same run and prints the figures and their
ratio (README). What holds on any machine, however loaded, is asserted here: the engine's work
and its events stay off the GUI thread and reach the pages on it, and the app moves its
long-lived objects out of the garbage collector's full passes once the node is ready.
"""

from __future__ import annotations

import gc
import threading

from PySide6.QtCore import QThread

from app.node.events import Event, StepDone
from app.ui.bridge import EngineBridge
from app.ui.gc_tuning import freeze_when_ready
from tests.ui.helpers import wait_training


def test_training_runs_off_the_gui_thread_and_its_events_reach_every_page_on_it(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    gui_thread = threading.current_thread()
    emitted_on: list[threading.Thread] = []
    delivered_on_gui_thread: list[bool] = []

    def on_engine_event(event: Event) -> None:  # called by the engine, on its own thread
        if isinstance(event, StepDone):
            emitted_on.append(threading.current_thread())

    unsubscribe = gui.controller.engine.subscribe(on_engine_event)
    gui.bridge.step.connect(lambda _e: delivered_on_gui_thread.append(QThread.currentThread() is gui.bridge.thread()))
    try:
        for index in range(len(gui.window.pages)):  # every page is shown (and updated) while it trains
            gui.window.show_page(index)
            before = len(delivered_on_gui_thread)
            qtbot.waitUntil(lambda b=before: len(delivered_on_gui_thread) > b, timeout=120_000)  # a hang bound
    finally:
        unsubscribe()
    assert emitted_on and gui_thread not in emitted_on, "the engine computed or emitted on the GUI thread"
    assert delivered_on_gui_thread and all(delivered_on_gui_thread), "a page slot ran off the GUI thread"


def test_long_lived_objects_are_frozen_once_the_node_is_ready(qtbot) -> None:  # noqa: ANN001
    """A full collection of torch's and Qt's objects took 844 ms on whichever thread allocated
    (often the GUI thread): the app freezes what lives as long as the process (app/ui/gc_tuning)."""
    bridge = EngineBridge()
    freeze_when_ready(bridge)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    kept = [object() for _ in range(100)]  # alive when the node becomes ready
    bridge.ready.emit()
    assert gc.get_freeze_count() >= len(kept)
