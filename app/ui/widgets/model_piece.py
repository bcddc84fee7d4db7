""""Your piece of the model": which layers this computer holds, how many copies of each the
network has, the model version, and what this computer has contributed so far.

Layers and version come from LayersAssigned, copies from NetworkChanged (the node's periodic
check of who holds what), the counters from the window's work history (app/ui/work_history.py)
and the NEURO total from the node's ledger (EarningsChanged).
"""

from __future__ import annotations

import datetime as dt

from PySide6.QtWidgets import QGridLayout, QGroupBox, QLabel, QWidget

from app.node.events import EarningsChanged, LayersAssigned, NetworkChanged
from app.ui.format import format_neuro
from app.ui.work_history import WorkHistory


def copies_text(first: int, last: int, replicas: tuple[int, ...]) -> str:
    """'layer 0: 2 copies, layer 1: 1 copy' for the held layers; '' when the network has not said."""
    if not replicas or last > len(replicas):
        return ""
    parts = [f"layer {i}: {replicas[i]} cop{'ies' if replicas[i] != 1 else 'y'}" for i in range(first, last)]
    return ", ".join(parts)


class ModelPiece(QGroupBox):
    def __init__(self, history: WorkHistory, parent: QWidget | None = None) -> None:
        super().__init__("Your piece of the model", parent)
        self.history = history
        self.layers: LayersAssigned | None = None
        self.replicas: tuple[int, ...] = ()
        self.earned_units: int | None = None
        self.layers_label = QLabel("Not assigned yet: the node chooses its layers when it joins.")
        self.copies_label = QLabel("Not known yet: the network reports who holds what every half minute.")
        self.copies_label.setToolTip("Replicas of each layer held by this computer, counted over the network.")
        self.version_label = QLabel("—")
        self.contribution_label = QLabel()
        for label in (self.layers_label, self.copies_label, self.version_label, self.contribution_label):
            label.setWordWrap(True)
        grid = QGridLayout(self)
        for row, (name, label) in enumerate((("Layers on this computer", self.layers_label),
                                             ("Copies in the network", self.copies_label),
                                             ("Model version", self.version_label),
                                             ("Contributed", self.contribution_label))):
            grid.addWidget(QLabel(name), row, 0)
            grid.addWidget(label, row, 1)
        self.show_contribution()

    def on_layers(self, event: LayersAssigned) -> None:
        self.layers = event
        held = event.last_layer - event.first_layer
        span = f"layer {event.first_layer}" if held == 1 else f"layers {event.first_layer}–{event.last_layer - 1}"
        self.layers_label.setText(f"{span} ({held} of the model's {event.total_layers})")
        self.version_label.setText(f"version {event.architecture_version}: {event.total_layers} layers, "
                                   f"{event.parameters / 1e6:.1f} million weights")
        self.version_label.setToolTip(f"Architecture version {event.architecture_version}, hidden size {event.hidden}, "
                                      f"{event.parameters:,} parameters.")
        self._show_copies()

    def on_network(self, event: NetworkChanged) -> None:
        self.replicas = tuple(event.replicas_per_layer)
        self._show_copies()

    def _show_copies(self) -> None:
        if self.layers is None:
            return
        text = copies_text(self.layers.first_layer, self.layers.last_layer, self.replicas)
        if text:
            self.copies_label.setText(text)

    def on_earnings(self, event: EarningsChanged) -> None:
        self.earned_units = event.lifetime_units
        self.show_contribution()

    def on_work(self, _event: object) -> None:
        """A step or a proof: the window's counters grew (the history counted it first)."""
        self.show_contribution()

    def show_contribution(self) -> None:
        totals = self.history.totals()
        since = dt.datetime.fromtimestamp(totals.since).strftime("%d %b %Y")
        text = (f"{totals.steps:,} training steps, {totals.tokens:,} tokens, {totals.proofs:,} proofs of work "
                f"(counted by this app since {since})")
        if self.earned_units is not None:
            text += f"; {format_neuro(self.earned_units)} settled in all (from the ledger)"
        self.contribution_label.setText(text)
