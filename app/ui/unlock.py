"""Unlock the wallet before the node starts, so it can sign its proofs.

The node takes its key from ``app.node.identity``: an OS keyring needs no password; a keystore
file needs the volunteer's password, handed over in memory with ``provide_password`` (never
written anywhere). The app first tries what the node would try on its own (keyring, environment,
a wallet sealed without a password), off the GUI thread because scrypt takes ~0.4 s; only if
that fails does it ask.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QWidget

from app.node import identity
from app.node.config import NodeConfig
from app.ui.tasks import run_background
from app.ui.widgets.wallet_dialogs import PasswordDialog
from app.wallet.keystore import Keystore


class StartupUnlock(QObject):
    unlocked = Signal()
    cancelled = Signal(str)  # why the node is not starting

    def __init__(self, config: NodeConfig, keystore_factory: Callable[[Path], Keystore] = Keystore,
                 parent_widget: QWidget | None = None) -> None:
        super().__init__(parent_widget)
        self.config = config
        self.keystore_factory = keystore_factory
        self.parent_widget = parent_widget
        self.dialog: PasswordDialog | None = None

    def begin(self) -> None:
        """Try without asking; ask only when the wallet needs a password."""
        keystore = self.keystore_factory(self.config.data_dir)
        run_background(lambda: identity.load_node_key(self.config, keystore),
                       lambda _key: self.unlocked.emit(), self._ask)

    def _ask(self, reason: str = "") -> None:
        if reason and "password" not in reason.lower():  # damaged wallet, keyring gone: a password won't help
            self.cancelled.emit(f"The node cannot start: {reason}")
            return
        dialog = PasswordDialog(
            "Unlock your wallet",
            "The node signs its proofs of work with your wallet key. Type your wallet password to start "
            "it; the password stays in memory only.", self.parent_widget)
        if reason and "wrong" in reason.lower():
            dialog.error.setText("Wrong password; try again.")
        dialog.accepted.connect(lambda: self.try_password(dialog.password.text()))
        dialog.rejected.connect(lambda: self.cancelled.emit(
            "The node is not running: the wallet is locked. Use Unlock and start when you are ready."))
        self.dialog = dialog
        dialog.open()

    def try_password(self, password: str) -> None:
        keystore = self.keystore_factory(self.config.data_dir)

        def done(_key: object) -> None:
            identity.provide_password(self.config.data_dir, password)
            self.unlocked.emit()

        run_background(lambda: keystore.unlock(password), done, self._ask)
