"""EngineBridge: the engine's events as Qt signals on the GUI thread, and its commands as requests.

Engine subscribers are called on the engine's thread. The bridge re-emits each event through a
signal connected with a queued connection, so every page slot runs on the GUI thread; it also
keeps the latest event of each kind so a page built late renders the current state at once.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, Protocol

from PySide6.QtCore import QObject, Qt, QTimer, Signal

from app.node.events import Command, Event, NodeState, StatusChanged
from app.ui.tasks import ErrorCallback, Handle, ResultCallback, watch

# Generous: a ledger query answers in milliseconds, a hardware re-measure in ~10 s on a slow CPU.
REQUEST_TIMEOUT_S = 30.0
# Replayed to a new bridge from ``engine.latest``, so a window attached late is up to date.
REPLAYED_KINDS = ("status", "hardware", "modes", "layers", "step", "activity", "network", "quorum",
                  "balance", "upgrade", "migration", "vocabulary", "reachability")


class EngineLike(Protocol):
    """What the UI needs of the engine: NodeEngine, or the screenshot script's demo engine."""

    def post(self, command: Command) -> concurrent.futures.Future[Any]: ...

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]: ...

    def latest(self, kind: str) -> Event | None: ...


class EngineBridge(QObject):
    event = Signal(object)  # every event, for views that want them all (logs)
    status = Signal(object)
    hardware = Signal(object)
    modes = Signal(object)
    layers = Signal(object)
    step = Signal(object)
    activity = Signal(object)
    peer_joined = Signal(object)
    peer_left = Signal(object)
    network = Signal(object)
    quorum = Signal(object)
    proof = Signal(object)
    proof_refused = Signal(object)
    earnings = Signal(object)
    balance = Signal(object)
    proposal = Signal(object)
    vocabulary = Signal(object)
    upgrade = Signal(object)
    migration = Signal(object)
    log = Signal(object)
    error = Signal(object)
    finished = Signal(object)
    generated_text = Signal(object)  # a piece of text the model wrote (Try the model)
    reachability = Signal(object)  # the reachability self-test's result (ReachabilityTested)
    attached = Signal()
    ready = Signal()  # the node's runtime answers queries now (first training/paused after attach)
    command_failed = Signal(str)  # a request without its own error handler failed

    _incoming = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._engine: EngineLike | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._latest: dict[str, Event] = {}
        self._ready = False
        self._incoming.connect(self._dispatch, Qt.ConnectionType.QueuedConnection)

    # --- engine -------------------------------------------------------------------------------

    @property
    def engine(self) -> EngineLike | None:
        return self._engine

    def attach(self, engine: EngineLike) -> None:
        """Listen to ``engine`` (from the GUI thread); replays its latest state first."""
        self.detach()
        self._engine = engine
        self._ready = False
        for kind in REPLAYED_KINDS:
            latest = engine.latest(kind)
            if latest is not None:
                self._dispatch(latest)
        self._unsubscribe = engine.subscribe(self._incoming.emit)
        self.attached.emit()

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._unsubscribe = None
        self._engine = None

    def latest(self, kind: str) -> Event | None:
        return self._latest.get(kind)

    @property
    def state(self) -> NodeState:
        status = self._latest.get("status")
        return status.state if isinstance(status, StatusChanged) else NodeState.STOPPED

    def _dispatch(self, event: Event) -> None:
        self._latest[event.kind] = event
        self.event.emit(event)
        signal = _SIGNAL_FOR_KIND.get(event.kind)
        if signal is not None:
            getattr(self, signal).emit(event)
        if isinstance(event, StatusChanged) and event.state in _RUNNING and not self._ready and self._engine:
            self._ready = True
            self.ready.emit()

    @property
    def is_ready(self) -> bool:
        return self._ready

    def inject(self, event: Event) -> None:
        """Deliver an event that did not come from the engine (the app's own, e.g. disk errors)."""
        self._dispatch(event)

    # --- commands ----------------------------------------------------------------------------

    def request(
        self,
        command: Command,
        on_result: ResultCallback | None = None,
        on_error: ErrorCallback | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> Handle | None:
        """Post ``command``; callbacks run on the GUI thread. Never blocks.

        Without ``on_error`` a failure is announced through ``command_failed`` (the main window's
        message bar), so no failure passes silently. A request still unanswered after
        ``timeout_s`` (an engine that stopped before running it) is reported and dropped.
        """
        report = on_error or self.command_failed.emit
        if self._engine is None:
            report("the node is not running yet; wait for it to start")
            return None
        try:
            future = self._engine.post(command)
        except Exception as exc:  # engine stopped or crashed: say so, keep the app running
            report(str(exc) or exc.__class__.__name__)
            return None
        handle = watch(future, on_result, report)

        def expire() -> None:
            if not handle.done():
                handle.cancel()
                report("the node did not answer in time; it may be busy or stopped")

        QTimer.singleShot(int(timeout_s * 1000), self, expire)
        return handle


_RUNNING = (NodeState.TRAINING, NodeState.PAUSED)
_SIGNAL_FOR_KIND = {
    "status": "status", "hardware": "hardware", "modes": "modes", "layers": "layers", "step": "step",
    "activity": "activity", "peer_joined": "peer_joined", "peer_left": "peer_left", "network": "network",
    "quorum": "quorum", "proof": "proof", "balance": "balance", "proposal": "proposal",
    "proof_refused": "proof_refused", "earnings": "earnings",
    "vocabulary": "vocabulary",
    "upgrade": "upgrade", "migration": "migration", "log": "log", "error": "error", "finished": "finished",
    "generated_text": "generated_text", "reachability": "reachability",
}
