"""Create a vocabulary proposal: title, merges one pair per line, the stake it locks, password."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QLineEdit, QPlainTextEdit, QWidget

from app.node.values import DEFAULT_ECONOMICS
from app.ui.format import format_neuro
from app.ui.widgets.wallet_dialogs import _password_field, _ValidatingDialog

PROPOSAL_STAKE_UNITS = DEFAULT_ECONOMICS.proposal_stake
MAX_MERGES = 256  # one proposal stays reviewable; larger vocabularies grow over several votes


def parse_merges(text: str) -> list[tuple[str, str]]:
    """One merge per line, the two sides separated by whitespace; ``▁`` (or ``␠``) stands for a space."""
    merges = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"line {number}: write the two parts separated by a space, e.g. 'th e'")
        merges.append(tuple(part.replace("▁", " ").replace("␠", " ") for part in parts))
    if not merges:
        raise ValueError("add at least one merge")
    if len(merges) > MAX_MERGES:
        raise ValueError(f"at most {MAX_MERGES} merges per proposal")
    return merges


class ProposalDialog(_ValidatingDialog):
    def __init__(self, available_units: int, parent: QWidget | None = None) -> None:
        super().__init__("New vocabulary proposal", parent)
        self.available_units = available_units
        self.title_edit = QLineEdit()
        self.merges_edit = QPlainTextEdit()
        self.merges_edit.setPlaceholderText("th e\n▁ the\nin g")
        self.password = _password_field()
        self.form.addRow("Title", self.title_edit)
        self.form.addRow("Merges (one pair per line)", self.merges_edit)
        self.form.addRow(QLabel(
            f"Proposing locks {format_neuro(PROPOSAL_STAKE_UNITS, 0)} as stake until the vote ends "
            f"(you have {format_neuro(available_units)} available)."))
        self.form.addRow("Confirm with password", self.password)

    def problem(self) -> str | None:
        if not self.title_edit.text().strip():
            return "Give the proposal a short title."
        try:
            parse_merges(self.merges_edit.toPlainText())
        except ValueError as exc:
            return f"Merges: {exc}."
        if self.available_units < PROPOSAL_STAKE_UNITS:
            return f"A proposal needs {format_neuro(PROPOSAL_STAKE_UNITS, 0)} available to stake."
        if not self.password.text():
            return "Type your wallet password to confirm."
        return None

    def merges(self) -> list[tuple[str, str]]:
        return parse_merges(self.merges_edit.toPlainText())
