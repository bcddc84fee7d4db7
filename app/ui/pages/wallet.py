"""Wallet: balances with what they mean, earnings by day and kind, an estimate per day, history
with filters and CSV export, send / stake / unstake / backup, and the auto-locking session."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.node.events import BalanceChanged, NodeState, ProofAccepted, Query, StatusChanged, WalletCommand
from app.ui.bridge import EngineBridge
from app.ui.estimate import EarningsEstimator
from app.ui.format import format_duration, format_neuro
from app.ui.records import BadAnswer, read_earnings, read_history, read_wallet
from app.ui.tasks import run_background
from app.ui.wallet_session import WalletSession
from app.ui.widgets.earnings_chart import EarningsChart
from app.ui.widgets.history_table import HistoryTable
from app.ui.widgets.wallet_dialogs import PasswordDialog, SendDialog, SendRequest, StakeDialog
from app.wallet.keystore import Keystore

BALANCE_EXPLAINED = (
    "Available can be sent or staked. Staked is locked to verify work and vote, and earns a bonus. "
    "Pending rewards are claimed by your proofs of work but not yet checked by other computers (about a "
    "minute, up to ten while others may still challenge them); they become available once checked."
)
DialogT = TypeVar("DialogT", bound=QDialog)
REFRESH_MIN_INTERVAL_S = 10.0  # proofs can arrive each epoch; re-reading history faster adds nothing


class WalletPage(QWidget):
    title = "Wallet"

    def __init__(self, bridge: EngineBridge, session: WalletSession, data_dir: Path,
                 keystore_factory: Callable[[Path], Keystore] = Keystore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge, self.session, self.data_dir = bridge, session, data_dir
        self.keystore_factory = keystore_factory
        self.available_units = self.staked_units = self.pending_units = 0
        self.estimator = EarningsEstimator()
        self.address_label = QLabel("—")
        self.address_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.available_label, self.staked_label = QLabel("—"), QLabel("—")
        self.pending_label, self.validated_label = QLabel("—"), QLabel("—")
        self.available_label.setProperty("role", "big")
        self.estimate_label = QLabel()
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.lock_button = QPushButton("Unlock")
        self.chart = EarningsChart()
        self.history = HistoryTable()
        self.active_dialog: PasswordDialog | SendDialog | StakeDialog | None = None
        self._last_refresh = 0.0
        self._build()
        self._connect()
        self._estimate_timer = QTimer(self)
        self._estimate_timer.setInterval(10_000)
        self._estimate_timer.timeout.connect(self._show_estimate)
        self._estimate_timer.start()
        self._show_estimate()

    def _build(self) -> None:
        balances = QGroupBox("Balance")
        grid = QGridLayout(balances)
        for row, (name, label) in enumerate((("Address", self.address_label), ("Available", self.available_label),
                                             ("Staked", self.staked_label), ("Pending", self.pending_label),
                                             ("Validated", self.validated_label))):
            grid.addWidget(QLabel(name), row, 0)
            grid.addWidget(label, row, 1)
        explained = QLabel(BALANCE_EXPLAINED)
        explained.setWordWrap(True)
        explained.setProperty("role", "hint")
        grid.addWidget(explained, 5, 0, 1, 2)
        grid.addWidget(self.estimate_label, 6, 0, 1, 2)
        actions = QHBoxLayout()
        self.send_button, self.stake_button = QPushButton("Send…"), QPushButton("Stake…")
        self.unstake_button, self.backup_button = QPushButton("Unstake…"), QPushButton("Export backup…")
        self.export_button = QPushButton("Export CSV…")
        for button in (self.send_button, self.stake_button, self.unstake_button, self.backup_button,
                       self.lock_button):
            actions.addWidget(button)
        actions.addStretch(1)
        history_box = QWidget()
        history_layout = QVBoxLayout(history_box)
        history_layout.addWidget(self.history)
        history_layout.addWidget(self.export_button)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.chart, "Earnings")
        self.tabs.addTab(history_box, "History")
        layout = QVBoxLayout(self)
        layout.addWidget(balances)
        layout.addLayout(actions)
        layout.addWidget(self.message)
        layout.addWidget(self.tabs, 1)

    def _connect(self) -> None:
        self.send_button.clicked.connect(self.open_send)
        self.stake_button.clicked.connect(lambda: self.open_stake("stake"))
        self.unstake_button.clicked.connect(lambda: self.open_stake("unstake"))
        self.backup_button.clicked.connect(self.open_backup)
        self.export_button.clicked.connect(self.choose_csv)
        self.lock_button.clicked.connect(self.toggle_lock)
        self.session.changed.connect(self._on_session)
        self.bridge.balance.connect(self.on_balance)
        self.bridge.proof.connect(self.on_proof)
        self.bridge.status.connect(self.on_status)
        self.bridge.ready.connect(self.refresh)
        latest = self.bridge.latest("balance")
        if latest is not None:
            self.on_balance(latest)

    # --- reading ------------------------------------------------------------------------------

    def say(self, text: str, error: bool = False) -> None:
        self.message.setStyleSheet("color: #d0342c;" if error else "")
        self.message.setText(text)

    def refresh(self) -> None:
        """Re-read balances, history and earnings from the node (three queries, none blocking)."""
        self._last_refresh = time.monotonic()
        self.bridge.request(Query("wallet"), self._on_wallet, lambda m: self.say(f"Balance unavailable: {m}", True))
        self.bridge.request(Query("history"), self._on_history, lambda m: self.say(f"History unavailable: {m}", True))
        self.bridge.request(Query("earnings"), self._on_earnings,
                            lambda m: self.say(f"Earnings unavailable: {m}", True))

    def _read(self, reader: Callable[[object], object], answer: object) -> object | None:
        try:
            return reader(answer)
        except BadAnswer as exc:
            self.say(f"The node sent data the app cannot read ({exc}).", True)
            return None

    def _on_wallet(self, answer: object) -> None:
        info = self._read(read_wallet, answer)
        if info is None:
            return
        self.address_label.setText(info.address)
        self._show_balance(info.available_units, info.staked_units, info.pending_units)
        self.validated_label.setText(format_neuro(info.validated_units))
        if info.unlocked != self.session.unlocked and not info.unlocked:
            self.session.lock()

    def _on_history(self, answer: object) -> None:
        rows = self._read(read_history, answer)
        if rows is not None:
            self.history.set_rows(rows)

    def _on_earnings(self, answer: object) -> None:
        rows = self._read(read_earnings, answer)
        if rows is not None:
            self.chart.set_rows(rows)

    def _show_balance(self, available: int, staked: int, pending: int) -> None:
        self.available_units, self.staked_units, self.pending_units = available, staked, pending
        self.available_label.setText(format_neuro(available))
        self.staked_label.setText(format_neuro(staked))
        self.pending_label.setText(format_neuro(pending))

    def on_balance(self, event: BalanceChanged) -> None:
        self.address_label.setText(event.address)
        self._show_balance(event.available_units, event.staked_units, event.pending_units)

    def on_status(self, event: StatusChanged) -> None:
        if event.state == NodeState.TRAINING:
            self.estimator.start(time.time())

    def on_proof(self, event: ProofAccepted) -> None:
        self.estimator.add(event.reward_units, time.time())
        if time.monotonic() - self._last_refresh > REFRESH_MIN_INTERVAL_S:
            self.refresh()

    def _show_estimate(self) -> None:
        now = time.time()
        per_day = self.estimator.per_day_units(now)
        if per_day is None:
            wait = self.estimator.seconds_until_ready(now)
            self.estimate_label.setText(f"Estimated earnings per day: after {format_duration(wait)} of work")
        else:
            self.estimate_label.setText(f"Estimated earnings per day at this pace: {format_neuro(per_day)}")

    # --- value-moving actions -----------------------------------------------------------------

    def open_send(self) -> SendDialog:
        dialog = SendDialog(self.available_units, parent=self)
        dialog.accepted.connect(lambda: self.submit_send(dialog.request()))
        return self._open(dialog)

    def submit_send(self, req: SendRequest) -> None:
        args = (("to", req.to), ("amount_units", req.amount_units), ("fee_units", req.fee_units),
                ("password", req.password))
        self.say("Sending…")
        self.bridge.request(WalletCommand("send", args),
                            lambda _r: self._done(f"Sent {format_neuro(req.amount_units)} to {req.to[:14]}…"),
                            lambda m: self.say(f"Not sent: {m}", True))

    def open_stake(self, action: str) -> StakeDialog:
        limit = self.available_units if action == "stake" else self.staked_units
        dialog = StakeDialog(action, limit, parent=self)
        dialog.accepted.connect(lambda: self.submit_stake(action, dialog.amount_units(), dialog.password.text()))
        return self._open(dialog)

    def submit_stake(self, action: str, amount_units: int, password: str) -> None:
        args = (("amount_units", amount_units), ("password", password))
        self.bridge.request(WalletCommand(action, args),
                            lambda _r: self._done(f"{action.capitalize()}d {format_neuro(amount_units)}."),
                            lambda m: self.say(f"Could not {action}: {m}", True))

    def _done(self, text: str) -> None:
        self.say(text)
        self.refresh()

    def _open(self, dialog: DialogT) -> DialogT:
        self.active_dialog = dialog
        dialog.open()
        return dialog

    def toggle_lock(self) -> None:
        if self.session.unlocked:
            self.session.lock()
            return
        dialog = PasswordDialog("Unlock wallet", "Unlocked, the node signs votes without asking again "
                                "until you leave the app idle.", parent=self)
        dialog.accepted.connect(lambda: self.session.unlock(
            dialog.password.text(), lambda m: self.say(f"Not unlocked: {m}", True)))
        self._open(dialog)

    def _on_session(self, unlocked: bool) -> None:
        self.lock_button.setText("Lock" if unlocked else "Unlock")
        self.say("Wallet unlocked." if unlocked else "Wallet locked.")

    def open_backup(self) -> None:
        dialog = PasswordDialog("Export backup", "The backup file is encrypted with this password "
                                "(your wallet password if the key is in a file).", parent=self)
        dialog.accepted.connect(lambda: self._choose_backup_path(dialog.password.text()))
        self._open(dialog)

    def _choose_backup_path(self, password: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save wallet backup", str(Path.home() / "neuroshard-wallet.backup"))
        if path:
            self.export_backup(Path(path), password)

    def export_backup(self, path: Path, password: str) -> None:
        """Seal the key into ``path`` off the GUI thread (scrypt takes a noticeable fraction of a second)."""
        keystore = self.keystore_factory(self.data_dir)
        self.say("Writing the backup…")
        run_background(lambda: keystore.export_backup(path, password),
                       lambda written: self.say(f"Backup written to {written}. Keep it and its password safe."),
                       lambda m: self.say(f"Backup not written: {m}", True))

    def choose_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export history", str(Path.home() / "neuroshard-history.csv"),
                                              "CSV files (*.csv)")
        if path:
            self.export_csv(Path(path))

    def export_csv(self, path: Path) -> None:
        try:
            count = self.history.export_csv(path)
        except OSError as exc:
            self.say(f"Could not write {path}: {exc.strerror or exc}. Choose another place.", True)
            return
        self.say(f"Exported {count} rows to {path}.")
