"""Dialogs that move value: send, stake/unstake, and a password prompt. Each validates what the
volunteer typed before anything is posted, and shows the reason next to the field."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from app.crypto.keys import is_valid_address
from app.node.values import DEFAULT_ECONOMICS
from app.ui.format import AmountError, format_neuro, parse_neuro

DEFAULT_FEE_UNITS = DEFAULT_ECONOMICS.min_transfer_fee


def _password_field() -> QLineEdit:
    field = QLineEdit()
    field.setEchoMode(QLineEdit.EchoMode.Password)
    field.setPlaceholderText("wallet password")
    return field


class _ValidatingDialog(QDialog):
    def __init__(self, title: str, parent: QWidget | None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.form = QFormLayout()
        self.error = QLabel()
        self.error.setStyleSheet("color: #d0342c;")
        self.error.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.try_accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

    def problem(self) -> str | None:
        raise NotImplementedError

    def try_accept(self) -> bool:
        problem = self.problem()
        self.error.setText(problem or "")
        if problem is None:
            self.accept()
        return problem is None


@dataclass(frozen=True)
class SendRequest:
    to: str
    amount_units: int
    fee_units: int
    password: str


class SendDialog(_ValidatingDialog):
    def __init__(self, available_units: int, fee_units: int = DEFAULT_FEE_UNITS,
                 parent: QWidget | None = None) -> None:
        super().__init__("Send NEURO", parent)
        self.available_units = available_units
        self.fee_units = fee_units
        self.address = QLineEdit()
        self.address.setPlaceholderText("ns1…")
        self.amount = QLineEdit()
        self.amount.setPlaceholderText("amount in NEURO, e.g. 1.5")
        self.fee_label = QLabel(f"{format_neuro(fee_units, 6)} (5 % of it is burned)")
        self.total_label = QLabel("—")
        self.password = _password_field()
        self.form.addRow("To address", self.address)
        self.form.addRow("Amount", self.amount)
        self.form.addRow("Network fee", self.fee_label)
        self.form.addRow("Total", self.total_label)
        self.form.addRow("Confirm with password", self.password)
        self.form.addRow(QLabel(f"Available: {format_neuro(available_units, 6)}"))
        self.amount.textChanged.connect(self._update_total)

    def _update_total(self) -> None:
        try:
            self.total_label.setText(format_neuro(parse_neuro(self.amount.text()) + self.fee_units, 6))
        except AmountError:
            self.total_label.setText("—")

    def problem(self) -> str | None:
        if not is_valid_address(self.address.text().strip()):
            return "That address is not valid: it starts with ns1 and has a checksum; copy it again."
        try:
            amount = parse_neuro(self.amount.text())
        except AmountError as exc:
            return f"Amount: {exc}."
        if amount + self.fee_units > self.available_units:
            return (f"Not enough available: {format_neuro(amount + self.fee_units, 6)} needed with the fee, "
                    f"{format_neuro(self.available_units, 6)} available.")
        if not self.password.text():
            return "Type your wallet password to confirm."
        return None

    def request(self) -> SendRequest:
        return SendRequest(self.address.text().strip(), parse_neuro(self.amount.text()), self.fee_units,
                           self.password.text())


class StakeDialog(_ValidatingDialog):
    """Stake or unstake an amount; ``limit_units`` is what can be moved (available or staked)."""

    def __init__(self, action: str, limit_units: int, parent: QWidget | None = None) -> None:
        super().__init__("Stake NEURO" if action == "stake" else "Unstake NEURO", parent)
        self.action = action
        self.limit_units = limit_units
        self.amount = QLineEdit()
        self.password = _password_field()
        what = "available" if action == "stake" else "staked"
        self.form.addRow(QLabel(
            "Staked NEURO earns a bonus and lets you verify others' work and propose vocabulary; "
            "it can be slashed if you cheat." if action == "stake" else
            "Unstaked NEURO becomes available again; verify mode needs 100 NEURO staked."))
        self.form.addRow("Amount", self.amount)
        self.form.addRow(QLabel(f"{what.capitalize()}: {format_neuro(limit_units, 6)}"))
        self.form.addRow("Confirm with password", self.password)

    def problem(self) -> str | None:
        try:
            amount = parse_neuro(self.amount.text())
        except AmountError as exc:
            return f"Amount: {exc}."
        if amount > self.limit_units:
            return f"You can {self.action} at most {format_neuro(self.limit_units, 6)}."
        if not self.password.text():
            return "Type your wallet password to confirm."
        return None

    def amount_units(self) -> int:
        return parse_neuro(self.amount.text())


class PasswordDialog(_ValidatingDialog):
    def __init__(self, title: str, text: str, parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        label = QLabel(text)
        label.setWordWrap(True)
        self.password = _password_field()
        self.form.addRow(label)
        self.form.addRow("Password", self.password)

    def problem(self) -> str | None:
        return None if self.password.text() else "Type your wallet password."
