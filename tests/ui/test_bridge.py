"""The bridge delivers engine events on the GUI thread and turns failures into messages."""

from __future__ import annotations

import concurrent.futures
import threading

from PySide6.QtCore import QThread

from app.node.events import Event, Query, StepDone
from app.ui.bridge import EngineBridge


class ThreadedEngine:
    """Emits from its own thread, as NodeEngine does; post() fails like a stopped engine."""

    def __init__(self) -> None:
        self.callbacks: list = []

    def subscribe(self, callback):  # noqa: ANN001, ANN201
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def latest(self, kind: str) -> Event | None:
        return None

    def emit_from_thread(self, event: Event) -> None:
        thread = threading.Thread(target=lambda: [cb(event) for cb in list(self.callbacks)])
        thread.start()
        thread.join()

    def post(self, command):  # noqa: ANN001, ANN201
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_exception(ValueError(f"unknown query '{command.what}'"))
        return future


def test_events_from_the_engine_thread_arrive_on_the_gui_thread(qtbot) -> None:  # noqa: ANN001
    bridge = EngineBridge()
    engine = ThreadedEngine()
    bridge.attach(engine)
    seen: list[tuple[int, bool]] = []
    bridge.step.connect(lambda e: seen.append((e.step, QThread.currentThread() is bridge.thread())))
    engine.emit_from_thread(StepDone(step=7, loss=1.0, tokens_per_s=1.0, tokens_total=1))
    qtbot.waitUntil(lambda: seen == [(7, True)], timeout=2_000)
    assert bridge.latest("step").step == 7


def test_failed_requests_become_messages(qtbot) -> None:  # noqa: ANN001
    bridge = EngineBridge()
    messages: list[str] = []
    bridge.command_failed.connect(messages.append)
    bridge.request(Query("wallet"))
    assert messages == ["the node is not running yet; wait for it to start"]
    bridge.attach(ThreadedEngine())
    errors: list[str] = []
    bridge.request(Query("nonsense"), None, errors.append)
    qtbot.waitUntil(lambda: errors == ["unknown query 'nonsense'"], timeout=2_000)
    bridge.detach()
