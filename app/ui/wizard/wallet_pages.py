"""Wizard pages for the wallet: create or import, the recovery phrase shown once, its
confirmation, and an optional encrypted backup. Key derivation (scrypt) runs off the GUI thread.

The wallet page says where the key will live. With an OS keyring the node starts by itself at
login. Without one (headless Linux, a desktop with no secret service) the key is sealed in a
file with the password, which the node then needs at every start: "Start when I log in" opens
the window and waits for it. The page says so and offers the one alternative that system has, a
wallet sealed without a password (app.node.identity.UNPROTECTED_PASSPHRASE: the protection of an
SSH key without a passphrase), for a computer that must start unattended."""

from __future__ import annotations

import random
from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWizardPage,
)

from app.node.identity import UNPROTECTED_PASSPHRASE
from app.ui.tasks import run_background
from app.ui.wizard.state import MIN_PASSWORD_LENGTH, PageId, WizardState
from app.wallet.errors import WalletError

CONFIRM_WORDS = 3  # enough to prove the phrase was written down, few enough not to annoy


def _password() -> QLineEdit:
    edit = QLineEdit()
    edit.setEchoMode(QLineEdit.EchoMode.Password)
    return edit


class WalletSetupPage(QWizardPage):
    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state
        self.setTitle("Your wallet")
        self.setSubTitle("NEURO you earn goes to a wallet whose key stays on this computer.")
        self.create_radio = QRadioButton("Create a new wallet")
        self.import_radio = QRadioButton("Import a recovery phrase")
        self.restore_radio = QRadioButton("Restore an encrypted backup file")
        self.create_radio.setChecked(True)
        group = QButtonGroup(self)
        for radio in (self.create_radio, self.import_radio, self.restore_radio):
            group.addButton(radio)
            radio.toggled.connect(self._update_fields)
        self.password, self.confirm = _password(), _password()
        self.phrase_edit = QPlainTextEdit()
        self.phrase_edit.setPlaceholderText("the 24 words, separated by spaces (the first four letters of each will do)")
        self.phrase_edit.setToolTip("A BIP-39 phrase, or the words a NeuroShard wallet made before 2027 showed.")
        self.phrase_edit.setMaximumHeight(70)
        self.backup_path = QLineEdit()
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.hide()
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #d0342c;")
        self.existing = QLabel()
        self.existing.setWordWrap(True)
        self.keyring_note = QLabel("Checking where this computer can keep the wallet key…")
        self.keyring_note.setWordWrap(True)
        self.keyring_note.setProperty("role", "hint")
        self.keyring_usable: bool | None = None  # unknown until the probe answers
        self.no_password = QCheckBox("No password: let the node start by itself at login (anyone who can use "
                                     "your account on this computer can use the wallet)")
        self.no_password.hide()
        self.no_password.toggled.connect(self._update_fields)
        self._lay_out(browse)
        self._done = False
        self._update_fields()

    def _lay_out(self, browse: QPushButton) -> None:
        form = QFormLayout()
        form.addRow("Password", self.password)
        form.addRow("Repeat password", self.confirm)
        form.addRow("Recovery phrase", self.phrase_edit)
        backup_row = QHBoxLayout()
        backup_row.addWidget(self.backup_path, 1)
        backup_row.addWidget(browse)
        form.addRow("Backup file", backup_row)
        self.form = form
        layout = QVBoxLayout(self)
        for widget in (self.existing, self.create_radio, self.import_radio, self.restore_radio):
            layout.addWidget(widget)
        layout.addLayout(form)
        layout.addWidget(self.keyring_note)
        layout.addWidget(self.no_password)
        layout.addWidget(self.busy)
        layout.addWidget(self.error)

    def initializePage(self) -> None:  # noqa: N802 (Qt override)
        try:
            keystore = self.state.keystore()
            existing = keystore.address if keystore.has_key() else None
        except WalletError as exc:
            existing = None
            self.error.setText(f"The wallet in this data folder is damaged ({exc}). Restore a backup.")
        if existing:
            self.state.address = existing
            self._done = True
            self.existing.setText(f"This data folder already has a wallet ({existing}); it will be used.")
            for radio in (self.create_radio, self.import_radio, self.restore_radio):
                radio.setEnabled(False)
            for edit in (self.password, self.confirm, self.phrase_edit, self.backup_path):
                edit.setEnabled(False)
        self.existing.setVisible(bool(existing))
        if not existing:
            run_background(keystore.keyring_usable, self.show_keyring, lambda _message: self.show_keyring(False))

    def show_keyring(self, usable: bool) -> None:
        """Say where the key will live and what that means for starting at login."""
        self.keyring_usable = usable
        if usable:
            self.keyring_note.setText("Your wallet key will be kept in this computer's password store (OS keyring). "
                                      "NeuroShard can start by itself when you log in; the password below protects "
                                      "backups.")
        else:
            self.keyring_note.setText("This computer has no password store (OS keyring) NeuroShard can use, so the "
                                      "wallet key is kept in a file sealed with your password. The node needs that "
                                      "password at every start: with \"Start when I log in\" the window opens and "
                                      "waits for it before the node computes anything.")
        self.no_password.setVisible(not usable)
        self._update_fields()

    def _update_fields(self) -> None:
        unprotected = self._unprotected()
        self.form.setRowVisible(self.password, not unprotected)
        self.form.setRowVisible(self.confirm, not self.restore_radio.isChecked() and not unprotected)
        self.form.setRowVisible(self.phrase_edit, self.import_radio.isChecked())
        self.form.setRowVisible(3, self.restore_radio.isChecked())

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Wallet backup", str(Path.home()))
        if path:
            self.backup_path.setText(path)

    def _unprotected(self) -> bool:
        """The volunteer chose a wallet without a password (only offered without a keyring)."""
        return self.keyring_usable is False and self.no_password.isChecked() and not self.restore_radio.isChecked()

    def problem(self) -> str | None:
        if self._unprotected():
            if self.import_radio.isChecked() and len(self.phrase_edit.toPlainText().split()) < 12:
                return "Type the whole recovery phrase."
            return None
        password = self.password.text()
        if len(password) < MIN_PASSWORD_LENGTH:
            return f"Choose a password of at least {MIN_PASSWORD_LENGTH} characters."
        if not self.restore_radio.isChecked() and password != self.confirm.text():
            return "The two passwords differ."
        if self.import_radio.isChecked() and len(self.phrase_edit.toPlainText().split()) < 12:
            return "Type the whole recovery phrase."
        if self.restore_radio.isChecked() and not Path(self.backup_path.text()).is_file():
            return "Choose the backup file."
        return None

    def validatePage(self) -> bool:  # noqa: N802 (Qt override)
        if self._done:
            return True
        problem = self.problem()
        self.error.setText(problem or "")
        if problem is None:
            self._start()
        return False  # the background task moves the wizard on when the key is saved

    def _start(self) -> None:
        keystore = self.state.keystore()
        password = UNPROTECTED_PASSPHRASE if self._unprotected() else self.password.text()
        self.state.unprotected = self._unprotected()
        created = self.create_radio.isChecked()
        if created:
            def work() -> tuple[str, str]:
                key = keystore.create(password)
                return key.address, keystore.recovery_phrase(password)
        elif self.import_radio.isChecked():
            words = " ".join(self.phrase_edit.toPlainText().split())

            def work() -> tuple[str, str]:
                return keystore.import_phrase(words, password).address, ""
        else:
            path = Path(self.backup_path.text())

            def work() -> tuple[str, str]:
                return keystore.restore_backup(path, password).address, ""

        self.busy.show()
        self.setEnabled(False)

        def done(result: tuple[str, str]) -> None:
            self.busy.hide()
            self.setEnabled(True)
            self.state.address, self.state.phrase = result
            self.state.password, self.state.created = password, created
            self._done = True
            self.wizard().next()

        def failed(message: str) -> None:
            self.busy.hide()
            self.setEnabled(True)
            self.error.setText(f"The wallet was not saved: {message}")

        run_background(work, done, failed)

    def nextId(self) -> int:  # noqa: N802 (Qt override)
        return PageId.PHRASE if self.state.created else PageId.HARDWARE


class PhrasePage(QWizardPage):
    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state
        self.setTitle("Your recovery phrase")
        self.setSubTitle("Write these words down, in order, on paper. They are shown only now. Anyone with "
                         "them controls your NEURO; without them a lost computer means lost NEURO. They are "
                         "standard BIP-39 words: the first four letters of each are enough to tell them apart.")
        self.grid = QGridLayout()
        self.labels: list[QLabel] = []
        self.written = QCheckBox("I wrote down all the words in order")
        self.written.toggled.connect(self.completeChanged)
        layout = QVBoxLayout(self)
        layout.addLayout(self.grid)
        layout.addWidget(self.written)

    def initializePage(self) -> None:  # noqa: N802 (Qt override)
        for label in self.labels:
            label.deleteLater()
        self.labels = []
        for index, word in enumerate(self.state.phrase.split()):
            label = QLabel(f"{index + 1}. {word}")
            label.setStyleSheet("font-family: monospace; font-size: 12pt;")
            self.grid.addWidget(label, index // 4, index % 4)
            self.labels.append(label)

    def words(self) -> list[str]:
        return self.state.phrase.split()

    def isComplete(self) -> bool:  # noqa: N802 (Qt override)
        return self.written.isChecked()


class ConfirmPhrasePage(QWizardPage):
    def __init__(self, state: WizardState, rng: random.Random | None = None) -> None:
        super().__init__()
        self.state = state
        self.rng = rng or random.SystemRandom()
        self.setTitle("Confirm your recovery phrase")
        self.setSubTitle("Type the words asked for, to be sure they were written down correctly.")
        self.form = QFormLayout()
        self.positions: list[int] = []
        self.edits: list[QLineEdit] = []
        self.error = QLabel()
        self.error.setStyleSheet("color: #d0342c;")
        self.backup_button = QPushButton("Save an encrypted backup file… (recommended)")
        self.backup_button.clicked.connect(self._choose_backup)
        self.backup_status = QLabel()
        self.backup_status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addWidget(self.error)
        layout.addWidget(self.backup_button)
        layout.addWidget(self.backup_status)

    def initializePage(self) -> None:  # noqa: N802 (Qt override)
        while self.form.rowCount():
            self.form.removeRow(0)
        words = self.state.phrase.split()
        self.positions = sorted(self.rng.sample(range(len(words)), min(CONFIRM_WORDS, len(words))))
        # A backup sealed with the publicly known passphrase would protect nothing: the phrase is it.
        self.backup_button.setEnabled(not self.state.unprotected)
        if self.state.unprotected:
            self.backup_status.setText("Without a password no encrypted backup can be made; the recovery phrase "
                                       "you wrote down is your backup.")
        self.edits = []
        for position in self.positions:
            edit = QLineEdit()
            self.form.addRow(f"Word {position + 1}", edit)
            self.edits.append(edit)

    def validatePage(self) -> bool:  # noqa: N802 (Qt override)
        words = self.state.phrase.split()
        wrong = [p + 1 for p, edit in zip(self.positions, self.edits, strict=True)
                 if edit.text().strip().lower() != words[p].lower()]
        if wrong:
            self.error.setText(f"Word {', '.join(map(str, wrong))} does not match; check what you wrote down.")
            return False
        self.state.phrase = ""  # shown once: gone from memory once confirmed
        return True

    def _choose_backup(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save wallet backup", str(Path.home() / "neuroshard-wallet.backup"))
        if path:
            self.save_backup(Path(path))

    def save_backup(self, path: Path) -> None:
        """Seal the key with the wallet password into ``path``, off the GUI thread."""
        keystore, password = self.state.keystore(), self.state.password
        self.backup_status.setText("Writing the backup…")
        run_background(lambda: keystore.export_backup(path, password),
                       lambda written: self.backup_status.setText(f"Backup saved to {written}."),
                       lambda m: self.backup_status.setText(f"Backup not saved: {m}"))
