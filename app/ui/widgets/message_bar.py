"""A bar at the top of the window for errors and notices: clear words, dismissable, never modal.

Modal error boxes stop a volunteer's work and block tests; a bar keeps the app running and
keeps the last messages readable until dismissed.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

LEVEL_COLOURS = {"error": "#f8d7da", "warning": "#fff3cd", "info": "#d9ecff"}
LEVEL_TEXT = {"error": "#721c24", "warning": "#664d03", "info": "#084298"}


class MessageBar(QFrame):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 4, 4, 4)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.action = QPushButton()
        self.action.clicked.connect(self._run_action)
        close = QPushButton("Dismiss")
        close.clicked.connect(self.hide)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.action)
        layout.addWidget(close)
        self.level = ""
        self._callback: Callable[[], None] | None = None
        self.hide()

    def _run_action(self) -> None:
        callback, self._callback = self._callback, None
        self.hide()
        if callback is not None:
            callback()

    def show_message(self, text: str, level: str = "error", action_text: str = "",
                     action: Callable[[], None] | None = None) -> None:
        """Show ``text``; with ``action``, a button that runs it (e.g. "Unlock and start")."""
        self.level = level
        self._callback = action
        self.action.setText(action_text)
        self.action.setVisible(action is not None)
        self.setStyleSheet(
            f"QFrame#banner {{ background: {LEVEL_COLOURS.get(level, LEVEL_COLOURS['info'])}; }}"
            f" QLabel {{ color: {LEVEL_TEXT.get(level, LEVEL_TEXT['info'])}; }}"
        )
        self.label.setText(text)
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""
