"""The node's state in words and colour, readable at a glance."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QWidget

from app.node.events import NodeState
from app.ui.format import STATE_COLOURS, STATE_WORDS
from app.ui.plain_words import state_detail


class StateBadge(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("stateBadge")
        self.state = NodeState.STOPPED
        self.set_state(NodeState.STOPPED)

    def set_state(self, state: NodeState, detail: str = "") -> None:
        self.state = state
        plain = state_detail(detail)
        self.setText(STATE_WORDS[state] + (f" — {plain}" if plain else ""))
        self.setToolTip(STATE_WORDS[state] + (f" — {detail}" if detail else ""))
        self.setStyleSheet(
            f"QLabel {{ background: {STATE_COLOURS[state]}; color: white; border-radius: 6px;"
            " padding: 6px 14px; font-size: 14pt; font-weight: 600; }"
        )
