"""The migration dialog: what an architecture upgrade changes here, and running it.

Opened from the upgrade banner's "Review". It shows what changes and why (the network grew; the
model grows by function-preserving growth, so nothing learned is lost), this computer's figures
from the dry run (app/node/engine.migration_plan), where the backup goes, and three choices:

* "Migrate now": the node stops (it finishes its step and saves), the data dir is migrated on a
  worker thread (engine.run_migration: backup, growth, adoption; progress as MigrationProgress),
  and the node starts again on the new version. A failure is rolled back and said so.
* "Later": closes; the banner stays, the upgrade waits in the data dir.
* "Reset instead": seed 000's way, after a warning: the new version starts from fresh weights
  (the trained ones stay in the backup).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.node.engine import migration_plan, run_migration
from app.node.events import Event, MigrationProgress, UpgradeAvailable
from app.ui.controller import NodeController
from app.ui.tasks import run_background

Notify = Callable[[str, str], None]


def _gb(n: int) -> str:
    return f"{n / 1024**3:.2f} GB"


def _shape(s: dict[str, Any]) -> str:
    return f"{s['layers']} layers × {s['hidden']} wide, {s['parameters'] / 1e6:.1f} M parameters"


def describe_plan(plan: dict[str, Any]) -> str:
    """The dry run in words (every figure from ``plan``)."""
    growth = plan["growth"]["depth"]
    lines = [f"Version {plan['from']['version']}: {_shape(plan['from'])}",
             f"Version {plan['to']['version']}: {_shape(plan['to'])}",
             f"Growth: {growth['inserted']} new layers inserted at layer {growth['insert_at']} "
             "(they start as the identity), width widened so the outputs stay the same."]
    mine = plan["this_node"]
    if mine is None:
        lines.append("This computer has no saved layers yet: it takes its share of the new model when it starts.")
    else:
        a, b = mine["layers_after"]
        fit = "fits" if mine["fits"] else "does NOT fit"
        budget = (f" of the {_gb(mine['memory_budget_bytes'])} it may use ({fit})"
                  if mine["memory_budget_bytes"] else "")
        lines.append(f"This computer: layers {a}–{b} afterwards, {_gb(mine['memory_needed_bytes'])} of memory"
                     f"{budget}.")
    disk = plan["disk"]
    lines.append(f"Disk: {_gb(disk['needed_bytes'])} needed, {_gb(disk['free_bytes'])} free"
                 + ("" if disk["enough"] else " — not enough: free some space first") + ".")
    lines.append(f"About {plan['estimated_seconds']:.0f} s (assuming {plan['estimate_assumes']}).")
    lines.append(f"Backup: {plan['backup_dir']}")
    return "\n".join(lines)


def describe_result(result: dict[str, Any]) -> str:
    text = (f"Now on version {result['version_after']} "
            f"({result['parameters_after'] / 1e6:.1f} M parameters, was {result['parameters_before'] / 1e6:.1f} M).")
    before, after = result["held_out_loss_before"], result["held_out_loss_after"]
    if before is not None and after is not None:
        text += f" Held-out loss before {before:.4f}, after {after:.4f}."
    if result["fresh"]:
        text += " The new model starts from fresh weights."
    return text + f" The backup is in {result['backup_dir']}."


class MigrationDialog(QDialog):
    progressed = Signal(object)  # a MigrationProgress (or a notice) from the worker thread: queued
    migrated = Signal(object)  # the result dict, once the node runs the new version

    def __init__(self, controller: NodeController, event: UpgradeAvailable, notify: Notify,
                 parent: QWidget | None = None, *,
                 dry_run: Callable[[], dict[str, Any]] | None = None) -> None:
        """``dry_run`` gives the plan to review (default: engine.migration_plan on the node's data
        dir, on a worker thread); the screenshot script passes demo figures instead."""
        super().__init__(parent)
        self.controller, self.upgrade, self._notify = controller, event, notify
        self.setWindowTitle("Model upgrade")
        self.plan: dict[str, Any] | None = None
        self.outcome: dict[str, Any] | None = None  # the result dict, once migrated
        growth = event.candidate_parameters / max(1, event.current_parameters)
        self.why = QLabel(
            f"The network has grown: its memory now holds a model {growth:.1f}× larger "
            f"(version {event.candidate_version}). Your computer's layers grow in place, so what the model "
            "learned is kept. Your NEURO ledger is kept too.")
        self.why.setWordWrap(True)
        self.figures = QLabel("Checking what the upgrade means for this computer…")
        self.figures.setWordWrap(True)
        self.figures.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.hide()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.migrate_button = QPushButton("Migrate now")
        self.later_button = QPushButton("Later")
        self.reset_button = QPushButton("Reset instead")
        self.migrate_button.setEnabled(False)
        self.reset_button.setEnabled(False)
        self.migrate_button.clicked.connect(lambda: self.start_migration(fresh=False))
        self.later_button.clicked.connect(self.reject)
        self.reset_button.clicked.connect(self.confirm_reset)
        buttons = QHBoxLayout()
        buttons.addWidget(self.reset_button)
        buttons.addStretch(1)
        buttons.addWidget(self.later_button)
        buttons.addWidget(self.migrate_button)
        layout = QVBoxLayout(self)
        for widget in (self.why, self.figures, self.progress, self.status):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        self.progressed.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        run_background(dry_run or (lambda: migration_plan(controller.config)), self._show_plan, self._no_plan)

    def _show_plan(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.figures.setText(describe_plan(plan))
        self.migrate_button.setEnabled(plan["disk"]["enough"])
        self.reset_button.setEnabled(plan["disk"]["enough"])

    def _no_plan(self, message: str) -> None:
        self.figures.setText(f"The upgrade cannot be reviewed: {message}")

    def confirm_reset(self) -> None:
        answer = QMessageBox.warning(
            self, "Reset instead of growing?",
            "Resetting starts this computer's part of the new model from scratch: what it learned is not "
            "carried over (it stays in the backup folder). Growing keeps it. Reset anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer == QMessageBox.StandardButton.Yes:
            self.start_migration(fresh=True)

    def start_migration(self, *, fresh: bool) -> None:
        for button in (self.migrate_button, self.reset_button, self.later_button):
            button.setEnabled(False)
        self.progress.show()
        self.status.setText("Stopping the node (it finishes its current step and saves)…")
        config = self.controller.config

        def stopped(ended: object) -> None:
            if not ended:
                self._failed("the node did not stop in time, so nothing was changed; try again in a minute")
                return
            run_background(lambda: run_migration(config, self.progressed.emit, fresh=fresh),
                           self._done, self._failed)

        self.controller.stop_in_background(stopped)

    def _on_progress(self, event: Event) -> None:
        self.controller.bridge.inject(event)  # the banner shows it too
        if isinstance(event, MigrationProgress):
            self.progress.setValue(int(max(0.0, min(1.0, event.fraction)) * 1000))
            self.status.setText(event.message or event.phase)

    def _done(self, result: dict[str, Any]) -> None:
        self.outcome = result
        text = describe_result(result)
        self.status.setText(text + " Starting the node again…")
        self.later_button.setText("Close")
        self.later_button.setEnabled(True)
        self._notify("Model upgraded", text)
        self.controller.start()
        self.migrated.emit(result)

    def _failed(self, message: str) -> None:
        self.status.setText(f"The migration did not happen: {message}")
        self.later_button.setText("Close")
        self.later_button.setEnabled(True)
        self._notify("Model upgrade failed", message)
        if self.controller.engine is None:
            self.controller.start()
