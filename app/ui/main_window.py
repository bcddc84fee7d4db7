"""The main window: navigation, pages, message bar and upgrade banner. It only composes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QHBoxLayout, QListWidget, QMainWindow, QStackedWidget, QVBoxLayout, QWidget

from app.node.config import NodeConfig
from app.node.events import ErrorOccurred, NodeState, StatusChanged
from app.node.values import training_schedule
from app.ui.bridge import EngineBridge
from app.ui.icons import app_icon
from app.ui.pages.contribute import ContributePage
from app.ui.pages.dashboard import DashboardPage
from app.ui.pages.governance import GovernancePage
from app.ui.pages.logs import LogsPage
from app.ui.pages.network import NetworkPage
from app.ui.pages.settings import SettingsPage
from app.ui.pages.try_model import TryModelPage
from app.ui.pages.wallet import WalletPage
from app.ui.tasks import run_background
from app.ui.ui_settings import UiSettings
from app.ui.wallet_session import WalletSession
from app.ui.widgets.message_bar import MessageBar
from app.ui.widgets.start_failure import StartFailureDialog
from app.ui.widgets.upgrade_banner import UpgradeBanner
from app.ui.work_history import WorkHistory
from app.wallet.keystore import Keystore

# A fatal error in these states means the node never started (rather than stopped while working).
STARTING_STATES = (NodeState.STOPPED, NodeState.STARTING, NodeState.MEASURING, NodeState.JOINING)


class MainWindow(QMainWindow):
    quit_requested = Signal()
    hidden_to_tray = Signal()
    restart_requested = Signal()

    def __init__(self, bridge: EngineBridge, config: NodeConfig, ui: UiSettings,
                 keystore_factory: Callable[[Path], Keystore] = Keystore) -> None:
        super().__init__()
        self.bridge, self.ui = bridge, ui
        self.setWindowTitle("NeuroShard Node")
        self.setWindowIcon(app_icon())
        self.tray_available = False  # set by the app once the tray is shown
        self.start_failure: StartFailureDialog | None = None  # the last "could not start" dialog
        self.session = WalletSession(bridge, ui.wallet_lock_minutes, self)
        self.history = WorkHistory(config.data_dir, background=run_background)
        bridge.step.connect(self.history.on_step)
        bridge.proof.connect(self.history.on_proof)
        self.dashboard = DashboardPage(bridge, training_schedule(config.training), self.history)
        self.contribute = ContributePage(bridge)
        self.wallet = WalletPage(bridge, self.session, config.data_dir, keystore_factory)
        self.governance = GovernancePage(bridge, self.session)
        self.network = NetworkPage(bridge, self.history)
        self.try_model = TryModelPage(bridge)
        self.settings = SettingsPage(bridge, config, ui)
        self.logs = LogsPage(bridge, config)
        self.pages = [self.dashboard, self.contribute, self.wallet, self.governance, self.network,
                      self.try_model, self.settings, self.logs]
        self.message_bar = MessageBar()
        self.upgrade_banner = UpgradeBanner()
        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setFixedWidth(170)
        self.stack = QStackedWidget()
        for page in self.pages:
            self.nav.addItem(page.title)
            self.stack.addWidget(page)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(self.nav)
        body.addWidget(self.stack, 1)
        central = QWidget()
        outer = QVBoxLayout(central)
        outer.addWidget(self.upgrade_banner)
        outer.addWidget(self.message_bar)
        outer.addLayout(body, 1)
        self.setCentralWidget(central)
        self._connect()
        self.resize(1100, 760)
        if ui.geometry is not None:
            self.restoreGeometry(ui.geometry)
        self.show_page(min(max(0, ui.last_page), len(self.pages) - 1))

    def _connect(self) -> None:
        b = self.bridge
        b.command_failed.connect(lambda message: self.message_bar.show_message(message, "error"))
        b.error.connect(self.on_error)
        b.status.connect(self.on_status)
        b.upgrade.connect(self.upgrade_banner.on_upgrade)
        b.migration.connect(self.upgrade_banner.on_migration)
        self.settings.saved.connect(lambda _config: self.session.set_lock_minutes(self.ui.wallet_lock_minutes))

    def show_page(self, index: int) -> None:
        self.nav.setCurrentRow(index)

    def warm_up(self) -> None:
        """Lay out and render every page once, offscreen, before the node trains.

        A page's first show polishes its widgets and fills font and style caches: 10-40 ms each
        here, too much to spend at once on the GUI thread while training (the 50 ms budget), and
        nothing at start-up while torch loads on the engine thread.
        """
        for page in self.pages:
            page.resize(self.stack.size())
            page.ensurePolished()
            page.grab()

    def page_titles(self) -> list[str]:
        return [page.title for page in self.pages]

    def on_error(self, event: ErrorOccurred) -> None:
        if not event.fatal:
            self.message_bar.show_message(event.message, "error")
            return
        self.message_bar.show_message(f"The node stopped: {event.message}. Logs has the details.", "error",
                                      "Restart the node", self.restart_requested.emit)
        if self.bridge.state in STARTING_STATES:  # it never got going: say so where it cannot be missed
            self.show_start_failure(event.message)

    def show_start_failure(self, message: str) -> None:
        if self.start_failure is not None:
            self.start_failure.close()
        dialog = StartFailureDialog(message, self)
        dialog.retry_button.clicked.connect(self.restart_requested.emit)
        dialog.logs_button.clicked.connect(lambda: self.show_page(self.pages.index(self.logs)))
        if dialog.settings_button is not None:
            dialog.settings_button.clicked.connect(lambda: self.show_page(self.pages.index(self.settings)))
        self.start_failure = dialog
        dialog.open()

    def on_status(self, event: StatusChanged) -> None:
        if event.state == NodeState.ERROR and event.detail and not self.message_bar.isVisible():
            self.message_bar.show_message(f"The node stopped: {event.detail}", "error")

    def save_state(self) -> None:
        self.history.flush()
        self.ui.geometry = self.saveGeometry()
        self.ui.last_page = self.stack.currentIndex()
        self.ui.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        self.save_state()
        if self.ui.close_to_tray and self.tray_available:
            event.ignore()
            self.hide()
            self.hidden_to_tray.emit()
            return
        event.accept()
        self.quit_requested.emit()
