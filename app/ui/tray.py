"""System tray: an icon showing the node's state, a menu to pause, resume, snooze, open and quit,
and notifications for rewards, upgrades and errors."""

from __future__ import annotations

import functools
import time

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from app.node.events import (
    ErrorOccurred,
    NodeState,
    Pause,
    ProofAccepted,
    Resume,
    StatusChanged,
    UpgradeAvailable,
)
from app.ui.bridge import EngineBridge
from app.ui.format import STATE_WORDS, format_neuro
from app.ui.icons import state_icon
from app.ui.snooze import CHOICES, snooze_until, until_words

# Rewards arrive per proof (many per hour); one summary per half hour tells the volunteer the node
# earns without turning the notification area into a ticker.
REWARD_NOTIFY_INTERVAL_S = 1800.0


class NodeTray(QObject):
    open_requested = Signal()
    quit_requested = Signal()

    def __init__(self, bridge: EngineBridge, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.notify_rewards = True
        self.notifications: list[tuple[str, str]] = []  # (title, text), newest last
        self._reward_units = 0
        # time.monotonic() counts from boot: 0.0 would hold the first summary back for the first
        # 30 minutes after the computer started. No summary yet = due at once.
        self._last_reward_note = float("-inf")
        self.icon = QSystemTrayIcon(state_icon(NodeState.STOPPED))
        self.menu = QMenu()
        self.status_action = self.menu.addAction("Stopped")
        self.status_action.setEnabled(False)
        self.menu.addSeparator()
        self.open_action = self._add("Open NeuroShard", self.open_requested.emit)
        self.pause_action = self._add("Pause", lambda: self.bridge.request(Pause()))
        self.resume_action = self._add("Resume", lambda: self.bridge.request(Resume()))
        snooze = self.menu.addMenu("Snooze")
        self.snooze_actions = {
            choice: self._add(label, functools.partial(self.snooze, choice), snooze)
            for choice, label in CHOICES
        }
        self.menu.addSeparator()
        self.quit_action = self._add("Quit (stops the node)", self.quit_requested.emit)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._on_activated)
        bridge.status.connect(self.on_status)
        bridge.proof.connect(self.on_proof)
        bridge.upgrade.connect(self.on_upgrade)
        bridge.error.connect(self.on_error)
        self.on_status(StatusChanged(state=bridge.state))

    def close(self) -> None:
        """Stop listening to the node (events still queued from its last moments would otherwise
        reach an icon that is being deleted) and hide the icon."""
        for signal, slot in ((self.bridge.status, self.on_status), (self.bridge.proof, self.on_proof),
                             (self.bridge.upgrade, self.on_upgrade), (self.bridge.error, self.on_error)):
            signal.disconnect(slot)
        self.icon.hide()

    def _add(self, text: str, slot: object, menu: QMenu | None = None) -> QAction:
        action = (menu or self.menu).addAction(text)
        action.triggered.connect(slot)
        return action

    def show(self) -> None:
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.icon.show()

    def available(self) -> bool:
        return QSystemTrayIcon.isSystemTrayAvailable()

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.open_requested.emit()

    def snooze(self, choice: str, _checked: bool = False) -> None:
        until = snooze_until(choice)
        self.bridge.request(Pause(until=until))
        self.notify("Snoozed", f"Paused until {until_words(until)}.")

    def on_status(self, event: StatusChanged) -> None:
        words = STATE_WORDS[event.state]
        self.icon.setIcon(state_icon(event.state))
        self.icon.setToolTip(f"NeuroShard — {words}")
        self.status_action.setText(words)
        self.pause_action.setEnabled(event.state in (NodeState.TRAINING, NodeState.JOINING))
        self.resume_action.setEnabled(event.state == NodeState.PAUSED)

    def on_proof(self, event: ProofAccepted) -> None:
        self._reward_units += event.reward_units
        now = time.monotonic()
        if self.notify_rewards and now - self._last_reward_note >= REWARD_NOTIFY_INTERVAL_S:
            self.notify("Rewards earned", f"Your computer earned {format_neuro(self._reward_units)} "
                        "for proven work.")
            self._reward_units = 0
            self._last_reward_note = now

    def on_upgrade(self, event: UpgradeAvailable) -> None:
        self.notify("Model upgrade available", f"Version {event.candidate_version} is ready to review.")

    def on_error(self, event: ErrorOccurred) -> None:
        self.notify("NeuroShard problem", event.message, QSystemTrayIcon.MessageIcon.Critical)

    def notify(self, title: str, text: str,
               icon: QSystemTrayIcon.MessageIcon = QSystemTrayIcon.MessageIcon.Information) -> None:
        self.notifications.append((title, text))
        del self.notifications[:-50]
        if self.icon.isVisible() and QSystemTrayIcon.supportsMessages():
            self.icon.showMessage(title, text, icon, 8000)
