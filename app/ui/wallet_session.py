"""The unlocked wallet session and its auto-lock after inactivity.

Unlocking asks the node to hold the key for signing (WalletCommand "unlock"), so votes can be
signed without typing the password each time. Any keyboard or mouse input in the app keeps the
session alive; after ``lock_minutes`` without input it locks (WalletCommand "lock"), as wallet
apps do, so an unattended machine cannot move value.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QTimer, Signal
from PySide6.QtWidgets import QApplication

from app.node.events import WalletCommand
from app.ui.bridge import EngineBridge
from app.ui.tasks import ErrorCallback

_INPUT_EVENTS = frozenset({QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.Wheel})


class WalletSession(QObject):
    changed = Signal(bool)  # unlocked?

    def __init__(self, bridge: EngineBridge, lock_minutes: int = 5, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.unlocked = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.lock)
        self.set_lock_minutes(lock_minutes)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)

    def set_lock_minutes(self, minutes: float) -> None:
        self._timer.setInterval(max(1, int(minutes * 60_000)))

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
        if self.unlocked and event.type() in _INPUT_EVENTS:
            self._timer.start()
        return False

    def unlock(self, password: str, on_error: ErrorCallback) -> None:
        def done(_result: object) -> None:
            self.unlocked = True
            self._timer.start()
            self.changed.emit(True)

        self.bridge.request(WalletCommand("unlock", (("password", password),)), done, on_error)

    def lock(self) -> None:
        self._timer.stop()
        if not self.unlocked:
            return
        self.unlocked = False
        self.changed.emit(False)
        # The node may be gone already (quitting); locking the UI side is what matters then.
        self.bridge.request(WalletCommand("lock"), None, lambda _message: None)
