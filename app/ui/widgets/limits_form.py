"""The volunteer's resource limits as a form (used by Settings and the first-run wizard).

What BOINC and Folding@home volunteers ask for most: CPU/GPU share and memory caps, which GPUs,
disk and bandwidth caps, run only when idle, pause on battery, pause while listed programs or a
full-screen app run, and a weekly schedule. Reads and writes ``ResourceLimits`` (app/node/config.py).
"""

from __future__ import annotations

import dataclasses
import os

from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.node.config import ConfigError, ResourceLimits

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
GB = 2**30
MB = 2**20


class ScheduleEditor(QGroupBox):
    """One row per weekday: on/off, from hour, to hour. All days off = no schedule (always run)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Weekly schedule (leave all days off to run any time)", parent)
        grid = QGridLayout(self)
        self.rows: list[tuple[QCheckBox, QSpinBox, QSpinBox]] = []
        for day, name in enumerate(DAYS):
            on, start, end = QCheckBox(name), QSpinBox(), QSpinBox()
            start.setRange(0, 23)
            end.setRange(1, 24)
            end.setValue(24)
            start.setSuffix(":00")
            end.setSuffix(":00")
            grid.addWidget(on, day, 0)
            grid.addWidget(QLabel("from"), day, 1)
            grid.addWidget(start, day, 2)
            grid.addWidget(QLabel("to"), day, 3)
            grid.addWidget(end, day, 4)
            self.rows.append((on, start, end))

    def set_schedule(self, schedule: tuple[tuple[int, int, int], ...]) -> None:
        for on, start, end in self.rows:
            on.setChecked(False)
            start.setValue(0)
            end.setValue(24)
        for day, begin, finish in schedule:
            if 0 <= day < len(self.rows):
                on, start, end = self.rows[day]
                on.setChecked(True)
                start.setValue(begin)
                end.setValue(finish)

    def schedule(self) -> tuple[tuple[int, int, int], ...]:
        return tuple((day, s.value(), e.value()) for day, (on, s, e) in enumerate(self.rows) if on.isChecked())


def _parse_ids(text: str) -> tuple[int, ...]:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"GPUs: '{text}' should be numbers separated by commas, e.g. 0,1 (empty = all)")
    return tuple(int(p) for p in parts)


class LimitsForm(QWidget):
    def __init__(self, limits: ResourceLimits, compact: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._base = limits
        cores = os.cpu_count() or 1
        self.cpu_threads = QSpinBox()
        self.cpu_threads.setRange(0, cores)
        self.cpu_threads.setSpecialValueText("all but one core")
        self.gpu_share = QSpinBox()
        self.gpu_share.setRange(5, 100)
        self.gpu_share.setSuffix(" %")
        self.gpu_ids = QLineEdit()
        self.gpu_ids.setPlaceholderText("all GPUs (or e.g. 0,1)")
        self.memory = QSpinBox()
        self.memory.setRange(5, 95)
        self.memory.setSuffix(" % of memory")
        self.disk = QDoubleSpinBox()
        self.disk.setRange(1, 100_000)
        self.disk.setSuffix(" GB")
        self.upload, self.download = QSpinBox(), QSpinBox()
        for box in (self.upload, self.download):
            box.setRange(0, 10_000)
            box.setSuffix(" MB/s")
            box.setSpecialValueText("unlimited")
        self.only_idle = QCheckBox("Run only when the computer is idle (no keyboard or mouse input)")
        self.idle_minutes = QSpinBox()
        self.idle_minutes.setRange(1, 240)
        self.idle_minutes.setSuffix(" min without input")
        self.battery = QCheckBox("Pause on battery")
        self.fullscreen = QCheckBox("Pause while a full-screen app runs (games, video)")
        self.programs = QLineEdit()
        self.programs.setPlaceholderText("e.g. blender, steam (comma separated)")
        self.schedule = ScheduleEditor()
        self._lay_out(compact)
        self.only_idle.toggled.connect(self.idle_minutes.setEnabled)
        self.set_limits(limits)

    def _lay_out(self, compact: bool) -> None:
        form = QFormLayout()
        form.addRow("CPU threads", self.cpu_threads)
        form.addRow("GPU share", self.gpu_share)
        form.addRow("Use GPUs", self.gpu_ids)
        form.addRow("Memory", self.memory)
        form.addRow("Disk cap", self.disk)
        form.addRow("Upload cap", self.upload)
        form.addRow("Download cap", self.download)
        form.addRow(self.only_idle)
        form.addRow("Idle means", self.idle_minutes)
        form.addRow(self.battery)
        form.addRow(self.fullscreen)
        form.addRow("Pause while running", self.programs)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        if not compact:
            layout.addWidget(self.schedule)

    def set_limits(self, limits: ResourceLimits) -> None:
        self._base = limits
        self.cpu_threads.setValue(limits.cpu_threads or 0)
        self.gpu_share.setValue(round(limits.gpu_share * 100))
        self.gpu_ids.setText(",".join(str(i) for i in limits.gpu_ids))
        self.memory.setValue(round(limits.memory_fraction * 100))
        self.disk.setValue(limits.disk_bytes / GB)
        self.upload.setValue((limits.upload_bytes_per_s or 0) // MB)
        self.download.setValue((limits.download_bytes_per_s or 0) // MB)
        self.only_idle.setChecked(limits.only_when_idle)
        self.idle_minutes.setValue(limits.idle_minutes)
        self.idle_minutes.setEnabled(limits.only_when_idle)
        self.battery.setChecked(limits.pause_on_battery)
        self.fullscreen.setChecked(limits.pause_when_fullscreen)
        self.programs.setText(", ".join(limits.pause_when_running))
        self.schedule.set_schedule(limits.schedule)

    def limits(self) -> ResourceLimits:
        """The form as ResourceLimits; raises ConfigError with the field's problem."""
        programs = tuple(p.strip() for p in self.programs.text().split(",") if p.strip())
        limits = dataclasses.replace(
            self._base,
            cpu_threads=self.cpu_threads.value() or None,
            gpu_share=self.gpu_share.value() / 100,
            gpu_ids=_parse_ids(self.gpu_ids.text()),
            memory_fraction=self.memory.value() / 100,
            disk_bytes=int(self.disk.value() * GB),
            upload_bytes_per_s=self.upload.value() * MB or None,
            download_bytes_per_s=self.download.value() * MB or None,
            only_when_idle=self.only_idle.isChecked(),
            idle_minutes=self.idle_minutes.value(),
            pause_on_battery=self.battery.isChecked(),
            pause_when_fullscreen=self.fullscreen.isChecked(),
            pause_when_running=programs,
            schedule=self.schedule.schedule(),
        )
        limits.validate()
        return limits
