"""FirstRunWizard: composes the pages and, on Join, persists the chosen settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import QWidget, QWizard

from app.node import identity
from app.node.config import ConfigError, NodeConfig, save_config
from app.ui.icons import app_pixmap
from app.ui.settings_check import validate_settings
from app.ui.widgets.limits_form import first_run_limits
from app.ui.wizard.setup_pages import HardwarePage, JoinPage, LimitsPage, ModesPage, ReachPage, WelcomePage
from app.ui.wizard.state import PageId, WizardState
from app.ui.wizard.wallet_pages import ConfirmPhrasePage, PhrasePage, WalletSetupPage
from app.wallet.keystore import Keystore


class FirstRunWizard(QWizard):
    def __init__(self, config: NodeConfig, keystore_factory: Callable[[Path], Keystore] = Keystore,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("NeuroShard — first start")
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setPixmap(QWizard.WizardPixmap.LogoPixmap, app_pixmap(48))
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, False)
        config = dataclasses.replace(config, limits=first_run_limits(config.limits))
        self.state = WizardState(config=config, keystore_factory=keystore_factory)
        self.welcome = WelcomePage()
        self.wallet = WalletSetupPage(self.state)
        self.phrase = PhrasePage(self.state)
        self.confirm = ConfirmPhrasePage(self.state)
        self.hardware = HardwarePage(self.state)
        self.modes = ModesPage(self.state)
        self.limits = LimitsPage(self.state)
        self.reach = ReachPage(self.state)
        self.join = JoinPage(self.state)
        for page_id, page in ((PageId.WELCOME, self.welcome), (PageId.WALLET, self.wallet),
                              (PageId.PHRASE, self.phrase), (PageId.CONFIRM, self.confirm),
                              (PageId.HARDWARE, self.hardware), (PageId.MODES, self.modes),
                              (PageId.LIMITS, self.limits), (PageId.REACH, self.reach),
                              (PageId.JOIN, self.join)):
            self.setPage(page_id, page)
        self.setStartId(PageId.WELCOME)
        self.resize(760, 620)
        self.saved_config: NodeConfig | None = None

    def validateCurrentPage(self) -> bool:  # noqa: N802 (Qt override)
        if self.currentId() == PageId.JOIN:
            return self._save() and super().validateCurrentPage()
        return super().validateCurrentPage()

    def _save(self) -> bool:
        config = dataclasses.replace(self.state.config, modes=self.state.modes or None)
        try:
            save_config(validate_settings(config))
        except (ConfigError, OSError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.join.error.setText(f"Settings not saved: {detail}. Free some disk space or fix the value "
                                    "and press Join again.")
            return False
        self.saved_config = config
        if self.state.password:  # the node unlocks the new wallet with it (in memory only)
            identity.provide_password(config.data_dir, self.state.password)
        self.state.forget_secrets()
        return True

    def reject(self) -> None:
        self.hardware.probe.cancel()
        self.state.forget_secrets()
        super().reject()
