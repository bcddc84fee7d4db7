"""The node's state in words and colour, readable at a glance."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QWidget

from app.node.events import NodeState
from app.ui.format import STATE_COLOURS, STATE_WORDS
from app.ui.plain_words import state_detail

WARNING_COLOUR = "#b05a00"  # the amber of the app's other warnings


class StateBadge(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("stateBadge")
        self.state = NodeState.STOPPED
        self.detail = ""
        self.warning = ""  # work the network refused: the badge must not stay green over it
        self.set_state(NodeState.STOPPED)

    def set_state(self, state: NodeState, detail: str = "") -> None:
        self.state, self.detail = state, detail
        self._show()

    def set_warning(self, warning: str) -> None:
        """While training, say that work is being refused (in amber, not green); "" clears it."""
        self.warning = warning
        self._show()

    def _show(self) -> None:
        state, detail = self.state, self.detail
        warned = bool(self.warning) and state == NodeState.TRAINING
        plain = self.warning if warned else state_detail(detail)
        self.setText(STATE_WORDS[state] + (f" — {plain}" if plain else ""))
        self.setToolTip(STATE_WORDS[state] + (f" — {detail}" if detail else "") + (f"\n{self.warning}" if warned else ""))
        colour = WARNING_COLOUR if warned else STATE_COLOURS[state]
        self.setStyleSheet(
            f"QLabel {{ background: {colour}; color: white; border-radius: 6px;"
            " padding: 6px 14px; font-size: 14pt; font-weight: 600; }"
        )
