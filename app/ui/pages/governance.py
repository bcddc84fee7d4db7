"""Governance: vocabulary proposals with their phase and countdown, readable merges, tally and
quorum progress (66 % approval, 30 % quorum of staked supply: seed 001), voting, proposing."""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.node.events import ProposalChanged, Query, VocabularyChanged, WalletCommand
from app.node.values import DEFAULT_ECONOMICS
from app.ui.bridge import EngineBridge
from app.ui.format import countdown
from app.ui.merges_text import describe_merge, example_words, to_token_bytes
from app.ui.records import BadAnswer, ProposalInfo, read_proposals
from app.ui.wallet_session import WalletSession
from app.ui.widgets.proposal_dialog import ProposalDialog
from app.ui.widgets.wallet_dialogs import PasswordDialog

APPROVAL = DEFAULT_ECONOMICS.approval_threshold
QUORUM = DEFAULT_ECONOMICS.quorum_threshold
COLUMNS = ("Proposal", "Phase", "Phase ends in", "Yes", "Turnout")


def approval_share(p: ProposalInfo) -> float:
    cast = p.yes_weight + p.no_weight
    return p.yes_weight / cast if cast else 0.0


def turnout_share(p: ProposalInfo) -> float:
    return (p.yes_weight + p.no_weight) / p.staked_supply if p.staked_supply else 0.0


class GovernancePage(QWidget):
    title = "Governance"

    def __init__(self, bridge: EngineBridge, session: WalletSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge, self.session = bridge, session
        self.proposals: list[ProposalInfo] = []
        self.available_units = 0
        self.active_dialog: PasswordDialog | ProposalDialog | None = None
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.merges_list = QListWidget()
        self.detail = QLabel("Select a proposal to see its merges.")
        self.detail.setWordWrap(True)
        self.approval_bar, self.quorum_bar = QProgressBar(), QProgressBar()
        self.yes_button, self.no_button = QPushButton("Vote yes"), QPushButton("Vote no")
        self.propose_button = QPushButton("New proposal…")
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.vocabulary_label = QLabel("The model starts from 266 tokens (256 bytes and 10 special tokens).")
        self.vocabulary_label.setWordWrap(True)
        self._build()
        self._connect()
        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._update_countdowns)
        self._tick.start()

    def _build(self) -> None:
        intro = QLabel(f"Vocabulary grows by votes: a proposal needs {APPROVAL:.0%} yes of the votes cast and "
                       f"a turnout of {QUORUM:.0%} of staked NEURO. Votes are weighted by stake.")
        intro.setWordWrap(True)
        intro.setProperty("role", "subtitle")
        details = QGroupBox("Selected proposal")
        grid = QGridLayout(details)
        grid.addWidget(self.detail, 0, 0, 1, 2)
        grid.addWidget(self.merges_list, 1, 0, 1, 2)
        grid.addWidget(QLabel(f"Approval (needs {APPROVAL:.0%})"), 2, 0)
        grid.addWidget(self.approval_bar, 2, 1)
        grid.addWidget(QLabel(f"Turnout (quorum {QUORUM:.0%})"), 3, 0)
        grid.addWidget(self.quorum_bar, 3, 1)
        votes = QHBoxLayout()
        votes.addWidget(self.yes_button)
        votes.addWidget(self.no_button)
        votes.addStretch(1)
        votes.addWidget(self.propose_button)
        grid.addLayout(votes, 4, 0, 1, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.vocabulary_label)
        layout.addWidget(self.table, 1)
        layout.addWidget(details, 1)
        layout.addWidget(self.message)
        self._show_selected()

    def _connect(self) -> None:
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.yes_button.clicked.connect(lambda: self.vote(True))
        self.no_button.clicked.connect(lambda: self.vote(False))
        self.propose_button.clicked.connect(self.open_propose)
        self.bridge.proposal.connect(self.on_proposal)
        self.bridge.vocabulary.connect(self.on_vocabulary)
        self.bridge.balance.connect(lambda e: setattr(self, "available_units", e.available_units))
        self.bridge.ready.connect(self.refresh)

    def say(self, text: str, error: bool = False) -> None:
        self.message.setStyleSheet("color: #d0342c;" if error else "")
        self.message.setText(text)

    def refresh(self) -> None:
        self.bridge.request(Query("proposals"), self._on_proposals,
                            lambda m: self.say(f"Proposals unavailable: {m}", True))

    def _on_proposals(self, answer: object) -> None:
        try:
            self.set_proposals(read_proposals(answer))
        except BadAnswer as exc:
            self.say(f"The node sent proposals the app cannot read ({exc}).", True)

    def set_proposals(self, proposals: list[ProposalInfo]) -> None:
        selected = self.selected()
        self.proposals = proposals
        self.table.setRowCount(len(proposals))
        for row, p in enumerate(proposals):
            cells = (p.title or p.proposal_id[:12], p.phase, countdown(p.phase_ends_at) if p.phase_ends_at else "—",
                     f"{approval_share(p):.0%}", f"{turnout_share(p):.0%}")
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
        ids = [p.proposal_id for p in proposals]
        if selected is not None and selected.proposal_id in ids:
            self.table.selectRow(ids.index(selected.proposal_id))
        elif proposals:
            self.table.selectRow(0)
        self._show_selected()

    def on_vocabulary(self, event: VocabularyChanged) -> None:
        """What the votes did to the model this node trains: shown the moment merges take effect."""
        if not event.merges:
            self.vocabulary_label.setText("The model trains with the genesis vocabulary: 266 tokens (256 bytes "
                                          "and 10 special tokens). Merges that pass a vote are added here.")
            return
        proposals = len(event.applied)
        self.vocabulary_label.setText(
            f"The model trains with {event.vocab_size} tokens: {event.merges} merge(s) voted in by "
            f"{proposals} proposal{'s' if proposals != 1 else ''}, in force since the last averaging round.")

    def on_proposal(self, event: ProposalChanged) -> None:
        self.refresh()  # the event carries the tally only; merges and supply come with the query

    def selected(self) -> ProposalInfo | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self.proposals):
            return None
        return self.proposals[rows[0].row()]

    def _show_selected(self) -> None:
        p = self.selected()
        self.merges_list.clear()
        voting = p is not None and p.phase == "voting"
        self.yes_button.setEnabled(voting)
        self.no_button.setEnabled(voting)
        if p is None:
            self.approval_bar.setValue(0)
            self.quorum_bar.setValue(0)
            return
        ends = f", {p.phase} ends in {countdown(p.phase_ends_at)}" if p.phase_ends_at else ""
        self.detail.setText(f"{p.title or p.proposal_id} — proposed by {p.proposer[:14] or 'unknown'}"
                            f"{ends}; {len(p.merges)} merge(s).")
        for index, (left, right) in enumerate(p.merges):
            words = list(p.examples[index:index + 1]) if p.examples else example_words(left, right)
            suffix = f"   e.g. {', '.join(words)}" if words else ""
            self.merges_list.addItem(describe_merge(left, right) + suffix)
        self.approval_bar.setValue(round(approval_share(p) * 100))
        self.quorum_bar.setValue(min(100, round(turnout_share(p) / QUORUM * 100)) if QUORUM else 0)
        self.quorum_bar.setFormat(f"{turnout_share(p):.0%} of staked supply")

    def _update_countdowns(self) -> None:
        now = time.time()
        for row, p in enumerate(self.proposals):
            item = self.table.item(row, 2)
            if item is not None and p.phase_ends_at:
                item.setText(countdown(p.phase_ends_at, now))

    # --- actions -------------------------------------------------------------------------------

    def vote(self, approve: bool) -> None:
        p = self.selected()
        if p is None:
            self.say("Select a proposal first.", True)
            return
        if self.session.unlocked:
            self.submit_vote(p.proposal_id, approve, None)
            return
        dialog = PasswordDialog("Sign your vote", f"Vote {'yes' if approve else 'no'} on "
                                f"{p.title or p.proposal_id}: your vote is signed with your wallet key.", self)
        dialog.accepted.connect(lambda: self.submit_vote(p.proposal_id, approve, dialog.password.text()))
        self.active_dialog = dialog
        dialog.open()

    def submit_vote(self, proposal_id: str, approve: bool, password: str | None) -> None:
        args: tuple[tuple[str, object], ...] = (("proposal_id", proposal_id), ("approve", approve))
        if password is not None:
            args += (("password", password),)
        self.bridge.request(WalletCommand("vote", args),
                            lambda _r: self._after(f"Your {'yes' if approve else 'no'} vote was recorded."),
                            lambda m: self.say(f"Vote not recorded: {m}", True))

    def open_propose(self) -> ProposalDialog:
        dialog = ProposalDialog(self.available_units, self)
        dialog.accepted.connect(lambda: self.submit_proposal(dialog.title_edit.text().strip(), dialog.merges(),
                                                             dialog.password.text()))
        self.active_dialog = dialog
        dialog.open()
        return dialog

    def submit_proposal(self, title: str, merges: list[tuple[str, str]], password: str) -> None:
        pairs = tuple((to_token_bytes(left), to_token_bytes(right)) for left, right in merges)
        args = (("title", title), ("merges", pairs), ("password", password))
        self.bridge.request(WalletCommand("propose", args),
                            lambda _r: self._after("Proposal submitted; discussion starts now."),
                            lambda m: self.say(f"Proposal not submitted: {m}", True))

    def _after(self, text: str) -> None:
        self.say(text)
        self.refresh()
