"""The dialog shown when the node cannot start: what went wrong and what to do about it.

``advice`` maps the node's own message to a fix a volunteer can act on; a message it does not
recognise still appears, with the Logs page as the way on. The dialog is not modal: the window
stays usable (Settings is where most fixes are made).
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtWidgets import QMessageBox, QPushButton, QWidget


@dataclass(frozen=True)
class Advice:
    problem: str
    fix: str
    in_settings: bool  # the fix is made on the Settings page


def advice(message: str) -> Advice:
    text = message.lower()
    if "cannot listen" in text or "address already in use" in text or "failed to bind" in text:
        return Advice(message, "Another program uses this network port. Choose another port in Settings, or 0 "
                      "to let the computer pick a free one, then press Try again.", True)
    if "in use by process" in text or "only one node may run" in text:
        return Advice(message, "Another NeuroShard is already running on this data folder. Close it (look "
                      "for its tray icon or a terminal running main.py), then press Try again.", False)
    if "config" in text or ".toml" in text:
        return Advice(message, "A setting is wrong. Fix it in Settings (or in config.toml in the data folder), "
                      "then press Try again.", True)
    if "password" in text or "keystore" in text or "wallet" in text:
        return Advice(message, "The wallet could not be opened. Unlock it with its password, or restore it "
                      "from your recovery phrase or backup.", False)
    if "disk" in text or "no space" in text or "permission" in text:
        return Advice(message, "The data folder cannot be written. Free some disk space or choose another "
                      "data folder in Settings, then press Try again.", True)
    return Advice(message, "The Logs page has the details; Try again starts the node once more.", False)


class StartFailureDialog(QMessageBox):
    def __init__(self, message: str, parent: QWidget | None = None) -> None:
        super().__init__(QMessageBox.Icon.Warning, "The node could not start", "", QMessageBox.StandardButton.Close,
                         parent)
        self.advice = advice(message)
        self.setText(f"The node could not start: {self.advice.problem}")
        self.setInformativeText(self.advice.fix)
        self.retry_button: QPushButton = self.addButton("Try again", QMessageBox.ButtonRole.AcceptRole)
        self.settings_button: QPushButton | None = None
        if self.advice.in_settings:
            self.settings_button = self.addButton("Open Settings", QMessageBox.ButtonRole.ActionRole)
        self.logs_button: QPushButton = self.addButton("Open Logs", QMessageBox.ButtonRole.ActionRole)
