"""The node's state in words and colour, readable at a glance."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QWidget

from app.node.events import NodeState
from app.ui.format import STATE_COLOURS, STATE_WORDS


class StateBadge(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("stateBadge")
        self.state = NodeState.STOPPED
        self.set_state(NodeState.STOPPED)

    def set_state(self, state: NodeState, detail: str = "") -> None:
        self.state = state
        words = STATE_WORDS[state] + (f" — {detail}" if detail else "")
        self.setText(words)
        self.setToolTip(words)
        self.setStyleSheet(
            f"QLabel {{ background: {STATE_COLOURS[state]}; color: white; border-radius: 6px;"
            " padding: 6px 14px; font-size: 14pt; font-weight: 600; }"
        )
