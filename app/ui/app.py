"""The desktop app: window first, wizard on first run, then the engine; tray; clean quit.

``run_gui`` is what ``main.py`` calls. The window shows before torch is imported (the engine
imports it on its own thread), so the app appears in well under a second.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEvent
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from app.node.config import (
    CONFIG_FILE,
    ConfigError,
    NodeConfig,
    apply_file_settings,
    load_config_file,
    remember_data_dir,
)
from app.node.events import ErrorOccurred, UpgradeAvailable
from app.node.runtime_api import RuntimeFactory
from app.ui.activity_guard import ActivityGuard
from app.ui.bridge import EngineBridge
from app.ui.checkpoint_prompt import CorruptCheckpointPrompt
from app.ui.controller import NodeController
from app.ui.data_dir_move import DataDirMove
from app.ui.gc_tuning import freeze_when_ready
from app.ui.icons import app_icon
from app.ui.main_window import MainWindow
from app.ui.migration_dialog import MigrationDialog
from app.ui.session_end import SessionEnd
from app.ui.start_checks import display_problem
from app.ui.theme import apply_theme
from app.ui.tray import NodeTray
from app.ui.ui_settings import UiSettings
from app.ui.unlock import StartupUnlock
from app.ui.wizard.wizard import FirstRunWizard
from app.wallet.errors import WalletError
from app.wallet.keystore import Keystore

log = logging.getLogger("neuroshard.ui")


def needs_wizard(data_dir: Path, keystore_factory: Callable[[Path], Keystore] = Keystore) -> bool:
    """First run = no wallet in the data dir. A damaged wallet is not a first run: the window
    opens and says so, rather than offering to create a second key over it."""
    try:
        return not keystore_factory(data_dir).has_key()
    except WalletError:
        return False


def with_data_dir(config: NodeConfig, data_dir: Path) -> NodeConfig:
    """``config`` moved to ``data_dir``, with the settings saved there (ConfigError if unusable)."""
    moved = apply_file_settings(dataclasses.replace(config, data_dir=data_dir),
                                load_config_file(data_dir / CONFIG_FILE))
    moved.validate()
    return moved


class GuiApp:
    """Everything the running app holds; built without entering the event loop (tests use it)."""

    def __init__(self, config: NodeConfig, runtime_factory: RuntimeFactory | None = None,
                 keystore_factory: Callable[[Path], Keystore] = Keystore) -> None:
        self.qapp = QApplication.instance() or QApplication(sys.argv[:1])
        self.qapp.setApplicationName("NeuroShard")
        self.qapp.setWindowIcon(app_icon())
        self.qapp.setQuitOnLastWindowClosed(False)  # the tray keeps the node running
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.ui = UiSettings(config.data_dir)
        apply_theme(self.qapp, self.ui.theme)
        QGuiApplication.styleHints().colorSchemeChanged.connect(self._follow_system_theme)
        self.bridge = EngineBridge()
        freeze_when_ready(self.bridge)
        self.controller = NodeController(self.bridge, config, runtime_factory)
        self.window = MainWindow(self.bridge, config, self.ui, keystore_factory)
        self.tray = NodeTray(self.bridge)
        self.checkpoint_prompt = CorruptCheckpointPrompt(self.bridge, self.window)
        self.guard = ActivityGuard(self.bridge, config.limits, parent=self.window)
        self.guard.changed.connect(self.window.dashboard.set_hold_reason)
        self.guard.caps_changed.connect(self.window.dashboard.set_caps_in_force)
        self.guard.caps_changed.connect(self.window.settings.limits.show_in_force)
        self.mover = DataDirMove(self.controller, self.window)
        self.tray.notify_rewards = self.ui.notify_rewards
        self.keystore_factory = keystore_factory
        self.wizard: FirstRunWizard | None = None
        self.unlock: StartupUnlock | None = None
        self.quitting = False
        self.migration: MigrationDialog | None = None  # the open migration dialog, if any
        self._connect()

    def review_upgrade(self, event: UpgradeAvailable | None) -> None:
        """The banner's "Review": the migration dialog for the waiting upgrade."""
        if event is None:
            return
        self.migration = MigrationDialog(self.controller, event, self.tray.notify, parent=self.window)
        self.migration.migrated.connect(lambda _result: self.window.upgrade_banner.hide())
        self.migration.show()

    def _connect(self) -> None:
        self.tray.open_requested.connect(self.show_window)
        self.tray.quit_requested.connect(self.quit)
        self.controller.notice.connect(lambda text: self.window.message_bar.show_message(text, "warning"))
        self.window.quit_requested.connect(self.quit)
        self.window.restart_requested.connect(self._restart_node)
        self.window.upgrade_banner.review_requested.connect(self.review_upgrade)
        self.window.settings.saved.connect(self._on_settings_saved)
        self.window.settings.theme_changed.connect(lambda theme: apply_theme(self.qapp, theme))
        settings = self.window.settings
        settings.move_requested.connect(self.move_data_dir)
        settings.cancel_move_requested.connect(self.mover.cancel)
        self.mover.progress.connect(settings.show_move_progress)
        self.mover.stage.connect(settings.say)
        self.mover.moved.connect(self._data_dir_moved)
        self.mover.failed.connect(self._data_dir_move_failed)
        self.qapp.aboutToQuit.connect(self._shutdown)

    def launch(self) -> None:
        """Show the window, then the wizard (first run) or the engine."""
        self.window.show()
        self.window.warm_up()
        self.tray.show()
        self.window.tray_available = self.tray.available()
        if needs_wizard(self.config.data_dir, self.keystore_factory):
            self.wizard = FirstRunWizard(self.config, self.keystore_factory, self.window)
            self.wizard.accepted.connect(self._wizard_done)
            self.wizard.rejected.connect(self.quit)
            self.wizard.open()
        else:
            self.unlock_and_start()

    def unlock_and_start(self) -> None:
        """Unlock the wallet (asking only if needed), then start the node."""
        self.unlock = StartupUnlock(self.config, self.keystore_factory, self.window)
        self.unlock.unlocked.connect(self._start_node)
        self.unlock.cancelled.connect(self._unlock_cancelled)
        self.unlock.begin()

    def _start_node(self) -> None:
        if self.controller.engine is None and not self.quitting and not self.mover.running:
            self.controller.start()

    def _restart_node(self) -> None:
        if self.mover.running:  # a node started now would write into the folder being copied
            self.window.message_bar.show_message("The data folder is being moved; the node restarts when "
                                                 "that is done.", "warning")
            return
        self.controller.restart()

    def _unlock_cancelled(self, message: str) -> None:
        self.window.message_bar.show_message(message, "warning", "Unlock and start", self.unlock_and_start)

    def _wizard_done(self) -> None:
        wizard, self.wizard = self.wizard, None
        if wizard is not None and wizard.saved_config is not None:
            self.config = wizard.saved_config
            self.controller.config = self.config
            self.window.settings.config = self.config
            self.window.settings.load()
        self.controller.start()

    def _on_settings_saved(self, config: NodeConfig) -> None:
        self.config = config
        self.controller.config = config  # used at the next (re)start of the node
        self.guard.set_limits(config.limits)
        self.tray.notify_rewards = self.ui.notify_rewards

    # --- moving the data dir (Settings > Data folder > Change…) ----------------------------------
    def move_data_dir(self, target: Path, use_existing: bool = False) -> bool:
        """Stop the node, copy (or adopt) ``target``, restart there; see app/ui/data_dir_move.py."""
        if use_existing:
            try:
                with_data_dir(self.config, target)  # refuse a broken config.toml before stopping anything
            except ConfigError as exc:
                self._data_dir_move_failed(f"{target} holds settings this app cannot use ({exc})", restart=False)
                return False
        self.window.save_state()  # ui.ini is flushed, so the copy carries the window's settings
        self.window.session.lock()  # the restarted node starts with its wallet session locked
        if not self.mover.begin(self.config.data_dir, target, use_existing):
            return False
        self.window.settings.set_moving(True)
        return True

    def _data_dir_moved(self, new_dir: Path) -> None:
        old = self.config.data_dir
        try:
            config = with_data_dir(self.config, new_dir)
        except ConfigError as exc:
            try:
                remember_data_dir(old)
            except OSError:
                log.warning("could not record %s as the data folder again", old)
            self._data_dir_move_failed(f"{new_dir} holds settings this app cannot use ({exc})")
            return
        self.config = config
        self.ui = UiSettings(new_dir)
        self.controller.config = config
        self.window.ui = self.ui
        self.window.settings.set_data_dir(config, self.ui)
        self.window.wallet.data_dir = new_dir
        self.window.history.relocate(new_dir)
        self.window.logs.config = config
        self.guard.set_limits(config.limits)
        self.tray.notify_rewards = self.ui.notify_rewards
        self.window.session.set_lock_minutes(self.ui.wallet_lock_minutes)
        apply_theme(self.qapp, self.ui.theme)  # an adopted folder brings its own window settings
        self.window.settings.set_moving(False)
        text = (f"The node now keeps its data in {new_dir}. The old folder {old} is no longer used; "
                "you can delete it once you have checked that the wallet and the node work.")
        self.window.settings.say(text)
        self.window.message_bar.show_message(text, "info")
        self.unlock_and_start()  # a password-protected wallet is unlocked again in its new folder

    def _data_dir_move_failed(self, message: str, restart: bool = True) -> None:
        self.window.settings.set_moving(False)
        text = f"The data folder was not changed: {message}. The node keeps using {self.config.data_dir}."
        self.window.settings.say(text, True)
        self.window.message_bar.show_message(text, "error")
        if restart:
            self.unlock_and_start()

    def _follow_system_theme(self) -> None:
        if self.ui.theme == "system":
            apply_theme(self.qapp, "system")

    def show_window(self) -> None:
        self.window.showNormal()
        self.window.raise_()
        self.window.activateWindow()

    def quit(self) -> None:
        if self.quitting:
            return
        self.quitting = True
        self.window.save_state()
        self._shutdown()
        self.qapp.quit()

    def _shutdown(self) -> None:
        self.mover.cancel()
        if self.wizard is not None:
            self.wizard.hardware.probe.cancel()
        if not self.controller.stop():
            self.bridge.inject(ErrorOccurred(message="the node did not stop in time; it was left to exit"))
        self.tray.icon.hide()


    def dispose(self) -> None:
        """Stop the node and free the window and tray (their timers stop with them)."""
        self._shutdown()
        self.window.session.lock()
        self.tray.close()
        self.tray.menu.deleteLater()
        self.tray.icon.deleteLater()
        self.window.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def run_gui(config: NodeConfig, argv: list[str] | None = None) -> int:
    """Create the app, show the window, run the event loop; stops the engine cleanly on quit.
    With no usable display: one line on stderr naming the problem and the fix, exit code 2."""
    problem = display_problem() if QApplication.instance() is None else None
    if problem is not None:
        print(f"neuroshard: cannot open the window: {problem}", file=sys.stderr)
        return 2
    if QApplication.instance() is None:
        QApplication(argv if argv is not None else sys.argv[:1])
    gui = GuiApp(config)  # the command line chose the data dir (config.start_data_dir: a moved one too)
    SessionEnd(gui.qapp, gui.quit)  # SIGTERM and logout stop the node (and checkpoint) as Quit does
    gui.launch()
    gui.qapp.exec()
    return 0
