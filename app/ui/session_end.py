"""The window ends cleanly when the session does: quit, logout and SIGTERM all stop the node
through the same path, which saves a checkpoint (NodeRuntime.shutdown) before the process ends.

SIGTERM (systemd, ``kill``, a logout on desktops that signal) is turned into a Qt quit through a
wake-up socket, so it is handled at once even while the event loop sits in C++. A logout asks
the app to save first (``commitDataRequest``); the app stops the node there, as Quit does.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable

from PySide6.QtCore import QObject, QSocketNotifier
from PySide6.QtGui import QGuiApplication, QSessionManager


class SessionEnd(QObject):
    """Calls ``end`` once on SIGTERM/SIGINT or when the desktop session ends."""

    def __init__(self, app: QGuiApplication, end: Callable[[], None]) -> None:
        super().__init__(app)
        self._end = end
        self._ended = False
        self._reader, self._writer = socket.socketpair()
        for end_point in (self._reader, self._writer):
            end_point.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno())
        self._previous = {sig: signal.signal(sig, lambda _signum, _frame: None)  # woken via the socket
                          for sig in (signal.SIGTERM, signal.SIGINT)}
        self._notifier = QSocketNotifier(self._reader.fileno(), QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._on_signal)
        app.commitDataRequest.connect(self._on_session_end)

    def _on_signal(self) -> None:
        try:
            self._reader.recv(64)
        except BlockingIOError:
            return
        self.trigger()

    def _on_session_end(self, _manager: QSessionManager) -> None:
        self.trigger()

    def trigger(self) -> None:
        if not self._ended:
            self._ended = True
            self._end()

    def uninstall(self) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._notifier.setEnabled(False)
        self._reader.close()
        self._writer.close()
