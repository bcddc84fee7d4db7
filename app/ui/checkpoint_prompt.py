"""The question a node asks when both copies of its checkpoint are corrupt and no peer holds its
layers: start those layers again from scratch, or stop (issue 15). The node waits, doing nothing
with the files, until the volunteer answers; the answer goes back as ResolveCorruptCheckpoint.

A minimal dialog written by the "faults" engineer (the engine side is app/node/checkpoint_recovery.py);
the "ui" engineer may restyle it.
"""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QMessageBox, QPushButton, QWidget

from app.node.events import CheckpointDecisionNeeded, Event, ResolveCorruptCheckpoint
from app.ui.bridge import EngineBridge


class CorruptCheckpointPrompt(QObject):
    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self._parent = parent
        self.dialog: QMessageBox | None = None
        self.restart_button: QPushButton | None = None
        self.stop_button: QPushButton | None = None
        bridge.event.connect(self.on_event)

    def on_event(self, event: Event) -> None:
        if isinstance(event, CheckpointDecisionNeeded):
            self.ask(event)

    def ask(self, event: CheckpointDecisionNeeded) -> None:
        box = QMessageBox(self._parent)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Saved training progress is damaged")
        box.setText("Both saved copies of this computer's part of the model are damaged, and no other "
                    "computer on the network holds that part right now.")
        box.setInformativeText("Start that part again from scratch (what it had learned is lost; the "
                               "damaged files are kept aside), or stop the node and restore a backup first.")
        box.setDetailedText(event.reason)
        self.restart_button = box.addButton("Start again from scratch", QMessageBox.ButtonRole.AcceptRole)
        self.stop_button = box.addButton("Stop the node", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(self.stop_button)  # the choice that loses nothing
        box.buttonClicked.connect(self._answered)
        self.dialog = box
        box.open()  # not exec(): the window keeps running while the question is open

    def _answered(self, button: object) -> None:
        choice = "restart" if button is self.restart_button else "stop"
        self.bridge.request(ResolveCorruptCheckpoint(choice))
