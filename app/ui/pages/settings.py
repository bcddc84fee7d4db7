"""Settings: node settings persisted to config.toml (shared with the headless node), window
settings to ui.ini, resource limits, the data folder (moved with "Change…", see
app/ui/data_dir_move.py) and the stop controls ("finish the step, then stop" is not pause: it
checkpoints and ends the node)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.node import autostart
from app.node.config import REACH_CHOICES, ConfigError, NodeConfig, parse_host_port, save_config
from app.node.events import FinishStepThenStop, Remeasure
from app.ui import plain_words
from app.ui.bridge import EngineBridge
from app.ui.data_dir_copy import MoveError, check_target
from app.ui.settings_check import validate_settings
from app.ui.ui_settings import THEMES, UiSettings
from app.ui.widgets.limits_form import LimitsForm
from app.ui.widgets.wheel_guard import guard_wheel

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsPage(QWidget):
    title = "Settings"
    saved = Signal(object)  # the new NodeConfig
    theme_changed = Signal(str)
    move_requested = Signal(object, bool)  # target folder (Path), use its existing data as is
    cancel_move_requested = Signal()

    def __init__(self, bridge: EngineBridge, config: NodeConfig, ui: UiSettings,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge, self.config, self.ui = bridge, config, ui
        self.data_dir_label = QLabel(str(config.data_dir))
        self.data_dir_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.change_dir_button = QPushButton("Change…")
        self.move_progress = QProgressBar()
        self.move_progress.setRange(0, 100)
        self.move_progress.hide()
        self.cancel_move_button = QPushButton("Cancel the move")
        self.cancel_move_button.hide()
        self.existing_prompt: QMessageBox | None = None
        self.port = QSpinBox()
        self.port.setRange(0, 65535)
        self.port.setSpecialValueText("automatic (a free port)")  # 0: the OS picks one at each start
        self.trackers = QPlainTextEdit()
        self.trackers.setPlaceholderText("one HOST:PORT per line; empty = start or join a local genesis network")
        self.trackers.setMaximumHeight(70)
        self.reach = QComboBox()  # who may connect (the wizard's question); data: the config value
        for choice in REACH_CHOICES:
            self.reach.addItem(plain_words.REACH_CHOICE_WORDS[choice], choice)
            self.reach.setItemData(self.reach.count() - 1, plain_words.REACH_CHOICE_TERMS[choice],
                                   Qt.ItemDataRole.ToolTipRole)
        self.invites = QPlainTextEdit()
        self.invites.setPlaceholderText("a friend's invite code (starts with ns1-), one per line")
        self.invites.setMaximumHeight(60)
        self.invites.setToolTip(plain_words.INVITE_TERM)
        self.reach_note = QLabel(plain_words.FIREWALL_NOTE)
        self.reach_note.setWordWrap(True)
        self.lan_discovery = QCheckBox("Find other computers on this network (LAN discovery)")
        self.lan_discovery.setToolTip("Announces this node on the local network (mDNS) and connects to the "
                                      "nodes it hears there, each checked like any peer. Works while the node "
                                      "listens on a local network address.")
        self.theme = QComboBox()
        self.theme.addItems(THEMES)
        self.log_level = QComboBox()
        self.log_level.addItems(LOG_LEVELS)
        self.start_at_login = QCheckBox("Start NeuroShard when I log in")
        self.close_to_tray = QCheckBox("Closing the window keeps the node running in the tray")
        self.notify = QCheckBox("Notify me about rewards")
        self.lock_minutes = QSpinBox()
        self.lock_minutes.setRange(1, 240)
        self.lock_minutes.setSuffix(" min")
        self.limits = LimitsForm(config.limits)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.save_button = QPushButton("Save settings")
        self.finish_button = QPushButton("Finish the current step, then stop")
        self.remeasure_button = QPushButton("Measure this computer again")
        self._build()
        guard_wheel(self)
        self.load()

    def _build(self) -> None:
        general = QGroupBox("General")
        form = QFormLayout(general)
        open_dir = QPushButton("Open")
        open_dir.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.config.data_dir))))
        row = QHBoxLayout()
        row.addWidget(self.data_dir_label, 1)
        row.addWidget(open_dir)
        row.addWidget(self.change_dir_button)
        form.addRow("Data folder", row)
        note = QLabel("Wallet, ledger, checkpoints and settings live here. Change… copies them to another "
                      "folder (the node stops while it copies) and keeps the old folder until you delete it.")
        note.setWordWrap(True)
        form.addRow(note)
        move_row = QHBoxLayout()
        move_row.addWidget(self.move_progress, 1)
        move_row.addWidget(self.cancel_move_button)
        form.addRow(move_row)
        form.addRow("Port", self.port)
        form.addRow("Who may connect", self.reach)
        form.addRow(self.reach_note)
        form.addRow("Trackers", self.trackers)
        form.addRow("Invite codes", self.invites)
        form.addRow(self.lan_discovery)
        form.addRow("Theme", self.theme)
        form.addRow("Log level", self.log_level)
        form.addRow(self.start_at_login)
        form.addRow(self.close_to_tray)
        form.addRow(self.notify)
        form.addRow("Lock the wallet after", self.lock_minutes)
        limits = QGroupBox("What the node may use")
        QVBoxLayout(limits).addWidget(self.limits)
        stop = QGroupBox("Stopping")
        stop_layout = QHBoxLayout(stop)
        stop_layout.addWidget(self.finish_button)
        stop_layout.addWidget(self.remeasure_button)
        inner = QWidget()
        inner_layout = QVBoxLayout(inner)
        for widget in (general, limits, stop):
            inner_layout.addWidget(widget)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        layout = QVBoxLayout(self)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.message)
        layout.addWidget(self.save_button)
        self.save_button.clicked.connect(self.save)
        self.finish_button.clicked.connect(self.finish_then_stop)
        self.remeasure_button.clicked.connect(self.remeasure)
        self.change_dir_button.clicked.connect(self.choose_data_dir)
        self.cancel_move_button.clicked.connect(self.cancel_move_requested.emit)

    def load(self) -> None:
        c = self.config
        self.port.setValue(c.port)
        self.trackers.setPlainText("\n".join(c.trackers))
        self.invites.setPlainText("\n".join(c.invites))
        self._show_reach(c)
        self.lan_discovery.setChecked(bool(c.p2p.get("lan_discovery", True)))
        self.theme.setCurrentText(self.ui.theme)
        self.log_level.setCurrentText(c.log_level.upper() if c.log_level.upper() in LOG_LEVELS else "INFO")
        self.start_at_login.setChecked(self.ui.start_at_login)
        self.close_to_tray.setChecked(self.ui.close_to_tray)
        self.notify.setChecked(self.ui.notify_rewards)
        self.lock_minutes.setValue(self.ui.wallet_lock_minutes)
        self.limits.set_limits(c.limits)

    def _show_reach(self, config: NodeConfig) -> None:
        """The saved answer; a config from before the question shows where it listens, unchanged
        until the volunteer picks an answer."""
        legacy = self.reach.findData(None)
        if config.reach is None and legacy < 0:
            self.reach.insertItem(0, f"As the settings file says (listens on {config.host})", None)
        elif config.reach is not None and legacy >= 0:
            self.reach.removeItem(legacy)
        self.reach.setCurrentIndex(self.reach.findData(config.reach))

    def say(self, text: str, error: bool = False) -> None:
        self.message.setStyleSheet("color: #d0342c;" if error else "")
        self.message.setText(text)

    def edited_config(self) -> NodeConfig:
        """The config the form describes; ConfigError names the field that is wrong."""
        trackers = tuple(t.strip() for t in self.trackers.toPlainText().split() if t.strip())
        for tracker in trackers:
            parse_host_port(tracker)
        invites = tuple(code.strip().lower() for code in self.invites.toPlainText().split() if code.strip())
        config = dataclasses.replace(self.config, port=self.port.value(), trackers=trackers, invites=invites,
                                     reach=self.reach.currentData(),
                                     p2p={**self.config.p2p, "lan_discovery": self.lan_discovery.isChecked()},
                                     log_level=self.log_level.currentText(), limits=self.limits.limits())
        return validate_settings(config)

    def save(self) -> bool:
        """Validate and persist; on a bad value or a full disk, say so and keep the old settings."""
        try:
            config = self.edited_config()
            save_config(config)
        except ConfigError as exc:
            self.say(f"Not saved: {exc}", True)
            return False
        except OSError as exc:
            self.say(f"Not saved: cannot write {self.config.config_path} ({exc.strerror or exc}). "
                     "Free some disk space and try again; the previous settings are unchanged.", True)
            return False
        warning = self._apply_autostart()
        self._save_ui()
        self.config = config
        self.saved.emit(config)
        self.say(warning or "Saved. Limits apply at once where the node supports it; port, who may "
                 "connect, trackers, invite codes and LAN discovery at the next start.", error=bool(warning))
        return True

    def _apply_autostart(self) -> str:
        """Create or remove the login entry; returns a warning when the OS refused."""
        try:
            if self.start_at_login.isChecked() != autostart.is_enabled():
                autostart.set_enabled(self.start_at_login.isChecked())
        except autostart.AutostartError as exc:
            return f"Settings saved, but {exc}"
        return ""

    def _save_ui(self) -> None:
        theme_changed = self.theme.currentText() != self.ui.theme
        self.ui.theme = self.theme.currentText()
        self.ui.start_at_login = self.start_at_login.isChecked()
        self.ui.close_to_tray = self.close_to_tray.isChecked()
        self.ui.notify_rewards = self.notify.isChecked()
        self.ui.wallet_lock_minutes = self.lock_minutes.value()
        self.ui.sync()
        if theme_changed:
            self.theme_changed.emit(self.ui.theme)

    # --- the data folder ------------------------------------------------------------------------
    def choose_data_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder for the node's data",
                                                  str(self.config.data_dir.parent))
        if folder:
            self.change_data_dir(Path(folder))

    def change_data_dir(self, target: Path) -> bool:
        """Check ``target`` and ask the app to move there; False (with the reason shown) if refused.

        A folder that already holds a node's data is offered as is: copying over it would mix two
        wallets and ledgers, so the volunteer either uses it or picks another folder.
        """
        try:
            checked = check_target(self.config.data_dir, target)
        except MoveError as exc:
            self.say(f"The data folder was not changed: {exc}.", True)
            return False
        if not checked.existing:
            self.move_requested.emit(checked.path, False)
            return True
        box = QMessageBox(QMessageBox.Icon.Question, "Use the data already there?",
                          f"{checked.path} already holds a NeuroShard node's data (wallet, ledger or settings). "
                          "Use it as is? Nothing is copied, and the current folder stays as it is.",
                          QMessageBox.StandardButton.Cancel, self)
        use = box.addButton("Use it as is", QMessageBox.ButtonRole.AcceptRole)
        use.clicked.connect(lambda: self.move_requested.emit(checked.path, True))
        box.rejected.connect(lambda: self.say("The data folder was not changed."))
        self.existing_prompt = box
        box.open()
        return True

    def set_moving(self, moving: bool) -> None:
        """While a move runs nothing else may change the settings or the folder."""
        self.change_dir_button.setEnabled(not moving)
        self.save_button.setEnabled(not moving)
        self.finish_button.setEnabled(not moving)
        self.move_progress.setVisible(moving)
        self.cancel_move_button.setVisible(moving)
        if moving:
            self.move_progress.setValue(0)

    def show_move_progress(self, done: int, total: int) -> None:
        self.move_progress.setValue(100 if total == 0 else done * 100 // total)

    def set_data_dir(self, config: NodeConfig, ui: UiSettings) -> None:
        """The app moved to another data folder: show it and read its settings from there."""
        self.config, self.ui = config, ui
        self.data_dir_label.setText(str(config.data_dir))
        self.load()

    def finish_then_stop(self) -> None:
        self.finish_button.setEnabled(False)
        self.bridge.request(FinishStepThenStop(),
                            lambda _r: self.say("The node finishes its current step, saves, and stops."),
                            lambda m: (self.finish_button.setEnabled(True), self.say(f"Could not stop: {m}", True)))

    def remeasure(self) -> None:
        self.remeasure_button.setEnabled(False)
        self.say("Measuring… (a few seconds; the node keeps running)")

        def done(report: object) -> None:
            self.remeasure_button.setEnabled(True)
            tier = report.get("tier") if isinstance(report, dict) else None
            self.say(f"Measured again: tier {tier}." if tier else "Measured again.")

        def failed(message: str) -> None:
            self.remeasure_button.setEnabled(True)
            self.say(f"Measurement failed: {message}", True)

        self.bridge.request(Remeasure(), done, failed, timeout_s=120.0)
