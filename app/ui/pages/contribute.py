"""Contribute: the five ways to help as toggles, with what each needs and earns (seed 001).

A mode the machine cannot do is greyed with the node's reason ("needs 100 NEURO staked"); a
toggle posts SetModes to the engine and shows the node's answer, reverting if it refuses.
"""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QGroupBox, QLabel, QVBoxLayout, QWidget

from app.node.events import EarningsChanged, ModesChanged, SetModes
from app.node.values import DESCRIPTIONS, MODES
from app.ui import plain_words
from app.ui.bridge import EngineBridge
from app.ui.format import format_neuro

# What each mode needs and earns, in a volunteer's words. Rates are the defaults of DESIGN.md §4.
NEEDS = {
    "pipeline": "Needs: a computer that is not too slow (speed tier T1–T4), memory for at least one layer "
                "of the model, and a steady connection.",
    "async": "Needs: memory for a whole model snapshot; works on slow machines and bad connections.",
    "data": "Needs: 10 GB of free disk and some upload bandwidth.",
    "verify": "Needs: 100 NEURO staked (a false challenge costs stake).",
    "inference": "Needs: a medium or faster computer (speed tier T1–T3) and live training (pipeline) on.",
}
EARNS = {
    "pipeline": "Earns: 0.0005 NEURO per batch per layer held, more when it holds the first or last layer.",
    "async": "Earns: 0.0003 NEURO per batch per layer of its updates that the computers holding those "
             "layers took into the model (they sign for what they took). An update turned down as harmful, "
             "or one nobody took, earns nothing.",
    "data": "Earns: 0.00001 NEURO per sample of training text served (256 tokens), counted from the "
            "receipts the computers that downloaded it sign. While nobody downloads from this computer, "
            "data earns nothing.",
    "verify": "Earns: 0.0005 NEURO per check, and a share of what a caught cheater loses.",
    "inference": "Earns: about 0.0001 NEURO for every word (token) it writes for someone, more when it is busy "
                 "or fast, paid by the asker as each word is written, plus about 0.01 NEURO per 1000 words for the "
                 "proven work.",
}


class ModeRow(QGroupBox):
    def __init__(self, mode: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.mode = mode
        self.toggle = QCheckBox(mode.capitalize())
        self.toggle.setStyleSheet("QCheckBox { font-weight: 600; font-size: 12pt; }")
        self.reason = QLabel()
        self.reason.setProperty("role", "hint")
        self.reason.setStyleSheet("color: #b05a00;")
        layout = QVBoxLayout(self)
        layout.addWidget(self.toggle)
        plain = plain_words.mode(mode, DESCRIPTIONS[mode])
        for text in (plain.words, NEEDS[mode], EARNS[mode]):
            label = QLabel(text)
            label.setWordWrap(True)
            layout.addWidget(label)
        self.setToolTip(plain.tooltip)
        self.earned = QLabel()
        self.earned.setWordWrap(True)
        layout.addWidget(self.earned)
        layout.addWidget(self.reason)
        self.reason.hide()

    def show_earned(self, active: bool, units: int | None) -> None:
        """What this mode earned since the node started, or plainly that it has had no paid work."""
        if units:
            self.earned.setText(f"Earned since start: {format_neuro(units)}")
        elif active:
            self.earned.setText("On, but no proven work paid yet for this mode since the node started.")
        else:
            self.earned.setText("")

    def set_available(self, reason: str | None) -> None:
        self.toggle.setEnabled(reason is None)
        self.reason.setVisible(reason is not None)
        self.reason.setText(f"Unavailable: {reason}" if reason else "")


class ContributePage(QWidget):
    title = "Contribute"

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.rows = {mode: ModeRow(mode) for mode in MODES}
        self.status = QLabel("The node proposes modes once it has measured this computer.")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        intro = QLabel("Choose how this computer helps. A mode earns NEURO only for work the network "
                       "accepted; each shows what it earned since the node started.")
        intro.setProperty("role", "subtitle")
        intro.setWordWrap(True)  # a long sentence must not widen the window
        layout.addWidget(intro)
        for row in self.rows.values():
            row.toggle.toggled.connect(self._on_toggled)
            layout.addWidget(row)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._active: tuple[str, ...] = ()
        self._updating = False
        self._earned: dict[str, int] = {}
        bridge.modes.connect(self.on_modes)
        bridge.earnings.connect(self.on_earnings)
        latest = bridge.latest("modes")
        if latest is not None:
            self.on_modes(latest)
        earnings = bridge.latest("earnings")
        if earnings is not None:
            self.on_earnings(earnings)

    def on_earnings(self, event: EarningsChanged) -> None:
        self._earned = dict(event.by_mode)
        self._show_earned()

    def _show_earned(self) -> None:
        for mode, row in self.rows.items():
            row.show_earned(mode in self._active, self._earned.get(mode))

    def on_modes(self, event: ModesChanged) -> None:
        reasons = dict(event.unavailable)
        self._active = tuple(event.active)
        self._updating = True
        try:
            for mode, row in self.rows.items():
                row.set_available(reasons.get(mode))
                row.toggle.setChecked(mode in event.active)
        finally:
            self._updating = False
        self.status.setText("Active: " + (", ".join(event.active) or "none — this computer is idle"))
        self._show_earned()

    def selected(self) -> tuple[str, ...]:
        return tuple(m for m, row in self.rows.items() if row.toggle.isChecked())

    def _on_toggled(self, _checked: bool) -> None:
        if self._updating:
            return
        wanted = self.selected()
        self.status.setText("Asking the node to switch modes…")

        def done(result: object) -> None:
            active = tuple(result) if isinstance(result, (list, tuple)) else wanted
            self._active = active
            self.status.setText("Active: " + (", ".join(active) or "none — this computer is idle"))

        def failed(message: str) -> None:
            self._updating = True
            try:
                for mode, row in self.rows.items():
                    row.toggle.setChecked(mode in self._active)
            finally:
                self._updating = False
            self.status.setText(f"The node refused: {message}")

        self.bridge.request(SetModes(modes=wanted), done, failed)
