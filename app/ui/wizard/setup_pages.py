"""Wizard pages after the wallet: welcome, hardware check, contribution modes, limits, who may
connect, join."""

from __future__ import annotations

import dataclasses

from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QLabel,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QVBoxLayout,
    QWizardPage,
)

from app.node.config import REACH_CHOICES, ConfigError
from app.node.events import HardwareMeasured
from app.node.values import DESCRIPTIONS, MODES, estimate_plan
from app.ui import plain_words
from app.ui.format import format_bytes
from app.ui.hardware_probe import HardwareProbe
from app.ui.widgets.limits_form import LimitsForm
from app.ui.wizard.state import WizardState


def _wrapped(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    return label


class WelcomePage(QWizardPage):
    def __init__(self) -> None:
        super().__init__()
        self.setTitle("Welcome to NeuroShard")
        layout = QVBoxLayout(self)
        layout.addWidget(_wrapped(
            "NeuroShard lends this computer's spare power to a network of volunteers who train one open "
            "language model together. Your computer holds a few layers of the model, trains them with its "
            "peers, and earns NEURO for work it can prove."))
        layout.addWidget(_wrapped(
            "The next steps create your wallet, measure this computer, and let you choose how much it may "
            "use. You can pause at any time from the window or the tray icon."))
        layout.addStretch(1)


class HardwarePage(QWizardPage):
    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state
        self.setTitle("Checking this computer")
        self.setSubTitle("A short benchmark of one reference layer places this computer in a speed tier.")
        self.probe = HardwareProbe(state.config, self)
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.step_label = QLabel()
        self.result = _wrapped("")
        self.cancel_button = QPushButton("Skip the check (measure when the node starts)")
        self.cancel_button.clicked.connect(self.cancel)
        layout = QVBoxLayout(self)
        for widget in (self.bar, self.step_label, self.result, self.cancel_button):
            layout.addWidget(widget)
        layout.addStretch(1)
        self.probe.progress.connect(self._on_progress)
        self.probe.measured.connect(self._on_measured)
        self.probe.failed.connect(self._on_failed)
        self._finished = False

    def initializePage(self) -> None:  # noqa: N802 (Qt override)
        if self.state.hardware is not None:
            self._on_measured(self.state.hardware)
            return
        self._finished = False
        self.cancel_button.setEnabled(True)
        self.result.setText("")
        self.probe.start()

    def _on_progress(self, percent: int, words: str) -> None:
        self.bar.setValue(percent)
        self.step_label.setText(words)

    def _on_measured(self, hw: HardwareMeasured) -> None:
        self.state.hardware = hw
        speed = plain_words.tier(hw.tier)
        self.bar.setValue(100)
        self.step_label.setText("Done")
        self.result.setText(
            f"<b>Device:</b> {hw.device_name} ({hw.device})<br><b>Memory:</b> {format_bytes(hw.memory_bytes)}"
            f"<br><b>Speed:</b> {speed.words} (tier {hw.tier}: {hw.ms_per_layer:.0f} ms per reference layer)")
        self.result.setToolTip(speed.tooltip)
        self._finish()

    def _on_failed(self, message: str) -> None:
        self.result.setText(f"The check did not finish: {message}. The node will measure again when it starts.")
        self._finish()

    def cancel(self) -> None:
        self.probe.cancel()
        self.result.setText("Skipped. The node measures this computer when it starts; modes follow from that.")
        self._finish()

    def _finish(self) -> None:
        self._finished = True
        self.cancel_button.setEnabled(False)
        self.completeChanged.emit()

    def isComplete(self) -> bool:  # noqa: N802 (Qt override)
        return self._finished


class ModesPage(QWizardPage):
    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state
        self.setTitle("How this computer helps")
        self.setSubTitle("Proposed from the measurement; you can change this later on the Contribute page.")
        self.boxes = {mode: QCheckBox(f"{mode.capitalize()} — {plain_words.mode(mode, DESCRIPTIONS[mode]).words}")
                      for mode in MODES}
        for mode, box in self.boxes.items():
            box.setToolTip(plain_words.mode(mode, DESCRIPTIONS[mode]).tooltip)
        self.reasons = {mode: QLabel() for mode in MODES}
        layout = QVBoxLayout(self)
        for mode in MODES:
            self.reasons[mode].setStyleSheet("color: #b05a00; margin-left: 24px;")
            layout.addWidget(self.boxes[mode])
            layout.addWidget(self.reasons[mode])
        self.note = _wrapped("")
        layout.addWidget(self.note)
        layout.addStretch(1)

    def initializePage(self) -> None:  # noqa: N802 (Qt override)
        hw = self.state.hardware
        if hw is None:
            self.note.setText("Without a measurement the node chooses modes when it starts.")
            for mode, box in self.boxes.items():
                box.setChecked(False)
                box.setEnabled(False)
                self.reasons[mode].setText("")
            return
        plan = estimate_plan(hw.memory_bytes, hw.tier, self.state.config.limits.memory_fraction,
                             self.state.config.data_dir)
        self.state.plan = plan
        self.note.setText("")
        for mode, box in self.boxes.items():
            reason = plan.reason(mode)
            box.setEnabled(reason is None)
            box.setChecked(mode in plan.proposed)
            self.reasons[mode].setText(f"Unavailable: {reason}" if reason else "")
            self.reasons[mode].setVisible(reason is not None)

    def validatePage(self) -> bool:  # noqa: N802 (Qt override)
        self.state.modes = tuple(m for m, box in self.boxes.items() if box.isChecked() and box.isEnabled())
        return True


class LimitsPage(QWizardPage):
    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state
        self.setTitle("What the node may use")
        self.setSubTitle("Limits apply at once; everything can be changed later in Settings.")
        self.form = LimitsForm(state.config.limits)
        self.error = QLabel()
        self.error.setStyleSheet("color: #d0342c;")
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form)
        layout = QVBoxLayout(self)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.error)

    def validatePage(self) -> bool:  # noqa: N802 (Qt override)
        try:
            limits = self.form.limits()
        except ConfigError as exc:
            self.error.setText(str(exc))
            return False
        self.state.config = dataclasses.replace(self.state.config, limits=limits)
        return True


class ReachPage(QWizardPage):
    """Asked once: who may connect to this computer (config ``reach``; Settings changes it later)."""

    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state
        self.setTitle("Who may connect to this computer")
        self.setSubTitle("Other computers must be able to connect to this one to train with it. "
                         "You can change this later in Settings.")
        self.group = QButtonGroup(self)
        self.choices: dict[str, QRadioButton] = {}
        layout = QVBoxLayout(self)
        for choice in REACH_CHOICES:
            button = QRadioButton(plain_words.REACH_CHOICE_WORDS[choice])
            button.setToolTip(plain_words.REACH_CHOICE_TERMS[choice])
            self.group.addButton(button)
            self.choices[choice] = button
            layout.addWidget(button)
            button.toggled.connect(lambda _on: self.completeChanged.emit())
        self.firewall = _wrapped(plain_words.FIREWALL_NOTE)
        layout.addWidget(self.firewall)
        layout.addStretch(1)

    def initializePage(self) -> None:  # noqa: N802 (Qt override)
        if self.state.config.reach is not None:  # the wizard shown again: the earlier answer stands
            self.choices[self.state.config.reach].setChecked(True)

    def choice(self) -> str | None:
        return next((name for name, button in self.choices.items() if button.isChecked()), None)

    def isComplete(self) -> bool:  # noqa: N802 (Qt override)
        return self.choice() is not None  # asked, not assumed: no answer is preselected

    def validatePage(self) -> bool:  # noqa: N802 (Qt override)
        self.state.config = dataclasses.replace(self.state.config, reach=self.choice())
        return True


class JoinPage(QWizardPage):
    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state
        self.setTitle("Ready to join")
        self.summary = _wrapped("")
        self.error = _wrapped("")
        self.error.setStyleSheet("color: #d0342c;")
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.error)
        layout.addStretch(1)

    def initializePage(self) -> None:  # noqa: N802 (Qt override)
        s = self.state
        hw = f"{s.hardware.tier} ({s.hardware.device_name})" if s.hardware else "measured at start"
        modes = ", ".join(s.modes) if s.modes else "chosen by the node"
        trackers = ", ".join(s.config.trackers) or "none yet"
        alone = "" if s.config.trackers else f"<br><br>{plain_words.TRAINING_ALONE}"
        reach = plain_words.REACH_CHOICE_WORDS.get(s.config.reach or "", "as the settings file says")
        self.summary.setText(
            f"<b>Wallet:</b> {s.address or '—'}<br><b>This computer:</b> {hw}<br><b>Modes:</b> {modes}"
            f"<br><b>Memory:</b> up to {s.config.limits.memory_fraction:.0%}<br><b>Who may connect:</b> {reach}"
            f"<br><b>Trackers:</b> {trackers}{alone}<br><br>Press Join to start. The node keeps running in the tray when the window is closed.")
        self.wizard().setButtonText(self.wizard().WizardButton.FinishButton, "Join")
