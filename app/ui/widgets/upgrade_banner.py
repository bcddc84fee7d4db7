"""Banner reserved for the architecture migration flow (its own issue): says an upgrade exists
and offers to review it; the migration dialog connects to ``review_requested``."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from app.node.events import MigrationProgress, UpgradeAvailable


class UpgradeBanner(QFrame):
    review_requested = Signal(object)  # the UpgradeAvailable event

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.setStyleSheet("QFrame#banner { background: #e7f1e4; } QLabel { color: #1d4d24; }")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 4, 4, 4)
        self.label = QLabel()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(200)
        self.progress.hide()
        self.button = QPushButton("Review upgrade")
        self.button.clicked.connect(lambda: self.review_requested.emit(self._event))
        layout.addWidget(self.label, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.button)
        self._event: UpgradeAvailable | None = None
        self.hide()

    def on_upgrade(self, event: UpgradeAvailable) -> None:
        self._event = event
        growth = event.candidate_parameters / max(1, event.current_parameters)
        self.label.setText(
            f"A larger model is available: version {event.candidate_version} "
            f"({event.candidate_parameters / 1e6:.0f} M parameters, {growth:.1f}× the current one). "
            "What was learned is kept."
        )
        self.show()

    def on_migration(self, event: MigrationProgress) -> None:
        self.progress.show()
        self.progress.setValue(int(max(0.0, min(1.0, event.fraction)) * 1000))
        self.label.setText(f"Upgrading: {event.phase}" + (f" — {event.message}" if event.message else ""))
        self.show()
