"""The volunteer's resource limits as a form (used by Settings and the first-run wizard).

What BOINC and Folding@home volunteers ask for most: CPU/GPU share and memory caps, which GPUs,
disk and bandwidth caps, run only when idle, pause on battery, pause while listed programs or a
full-screen app run, a weekly schedule, and gentler caps while the volunteer uses the computer.
Reads and writes ``ResourceLimits`` (app/node/config.py): the idle set is ResourceLimits' own
cpu_threads .. download_bytes_per_s, the in-use set is ``in_use`` (None: the same either way).
Problems are shown under the form as the volunteer edits; ``limits()`` raises ConfigError for them.
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
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.node.config import ConfigError, ResourceLimits, UsageCaps
from app.ui.fullscreen import Support
from app.ui.fullscreen import support as fullscreen_support
from app.ui.widgets.wheel_guard import guard_wheel

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
GB = 2**30
MB = 2**20
ERROR_STYLE = "color: #d0342c;"
# Offered when the volunteer first asks for separate in-use limits, and the first-run default:
# half the machine while in use, all of it when idle, as BOINC's "while in use" default suggests;
# everything else starts as the idle set.
IN_USE_SHARE = 0.5
IDLE_TITLE, ALWAYS_TITLE = "While the computer is idle", "At all times"


def gentler_in_use(idle: UsageCaps) -> UsageCaps:
    """The in-use set proposed beside ``idle``: at most IN_USE_SHARE of the CPU and GPU time."""
    return dataclasses.replace(idle, cpu_share=min(idle.cpu_share, IN_USE_SHARE),
                               gpu_share=min(idle.gpu_share, IN_USE_SHARE))


def first_run_limits(limits: ResourceLimits) -> ResourceLimits:
    """What a new volunteer starts from: a share of the computer while in use, all of it when idle
    (unless the config already says otherwise)."""
    if limits.in_use is not None or limits.only_when_idle:
        return limits
    return dataclasses.replace(limits, in_use=gentler_in_use(limits.caps(in_use=False)))


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


class CapsEditor(QGroupBox):
    """One set of UsageCaps: CPU threads, CPU and GPU share, upload and download caps."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self._given = UsageCaps()
        self._cores = os.cpu_count() or 1
        self.cpu_threads = QSpinBox()
        self.cpu_threads.setRange(0, self._cores)
        self.cpu_threads.setSpecialValueText("all but one core")
        self.cpu_share = QSpinBox()
        self.cpu_share.setRange(5, 100)
        self.cpu_share.setSuffix(" % of the time")
        self.gpu_share = QSpinBox()
        self.gpu_share.setRange(5, 100)
        self.gpu_share.setSuffix(" %")
        self.upload, self.download = QDoubleSpinBox(), QDoubleSpinBox()
        for box in (self.upload, self.download):
            # MB/s with two decimals: 0.06 is the smallest cap the engine takes (64 KiB/s).
            box.setRange(0, 10_000)
            box.setDecimals(2)
            box.setSingleStep(0.25)
            box.setSuffix(" MB/s")
            box.setSpecialValueText("unlimited")
        form = QFormLayout(self)
        form.addRow("CPU threads", self.cpu_threads)
        form.addRow("CPU share", self.cpu_share)
        form.addRow("GPU share", self.gpu_share)
        form.addRow("Upload cap", self.upload)
        form.addRow("Download cap", self.download)

    def set_caps(self, caps: UsageCaps) -> None:
        self._given = caps
        # A config written on a bigger machine keeps its thread count rather than being clamped.
        self.cpu_threads.setMaximum(max(self._cores, caps.cpu_threads or 0))
        self.cpu_threads.setValue(caps.cpu_threads or 0)
        self.cpu_share.setValue(round(caps.cpu_share * 100))
        self.gpu_share.setValue(round(caps.gpu_share * 100))
        self.upload.setValue((caps.upload_bytes_per_s or 0) / MB)
        self.download.setValue((caps.download_bytes_per_s or 0) / MB)

    def caps(self) -> UsageCaps:
        """The edited caps (not validated: the form does that with the set's name)."""
        return UsageCaps(
            cpu_threads=self.cpu_threads.value() or None,
            cpu_share=self._share(self.cpu_share, self._given.cpu_share),
            gpu_share=self._share(self.gpu_share, self._given.gpu_share),
            upload_bytes_per_s=self._rate(self.upload, self._given.upload_bytes_per_s),
            download_bytes_per_s=self._rate(self.download, self._given.download_bytes_per_s),
        )

    @staticmethod
    def _share(box: QSpinBox, given: float) -> float:
        # An untouched box keeps the exact value it was given (0.333 must not become 0.33).
        return given if box.value() == round(given * 100) else box.value() / 100

    @staticmethod
    def _rate(box: QDoubleSpinBox, given: int | None) -> int | None:
        if round(box.value(), 2) == round((given or 0) / MB, 2):
            return given  # untouched: the exact bytes/s (100 KiB/s shows as 0.10 MB/s)
        return round(box.value() * MB) or None


def _idle_caps(limits: ResourceLimits) -> UsageCaps:
    return limits.caps(in_use=False)


class LimitsForm(QWidget):
    def __init__(self, limits: ResourceLimits, compact: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._base = limits
        self.fullscreen_support: Support = fullscreen_support()
        self.idle_caps = CapsEditor(IDLE_TITLE)
        self.in_use_caps = CapsEditor("While you use the computer")
        # The idle set's boxes under their former names (Settings and its tests use them).
        self.cpu_threads, self.gpu_share = self.idle_caps.cpu_threads, self.idle_caps.gpu_share
        self.upload, self.download = self.idle_caps.upload, self.idle_caps.download
        self.separate = QCheckBox("Use separate limits while I use the computer")
        self.gpu_ids = QLineEdit()
        self.gpu_ids.setPlaceholderText("all GPUs (or e.g. 0,1)")
        self.memory = QSpinBox()
        self.memory.setRange(5, 95)
        self.memory.setSuffix(" % of memory")
        self.disk = QDoubleSpinBox()
        self.disk.setRange(1, 100_000)
        self.disk.setSuffix(" GB")
        self.only_idle = QCheckBox("Run only when the computer is idle (no keyboard or mouse input)")
        self.idle_minutes = QSpinBox()
        self.idle_minutes.setRange(1, 240)
        self.idle_minutes.setSuffix(" min without input")
        self.battery = QCheckBox("Pause on battery")
        self.fullscreen = QCheckBox("Pause while a full-screen app runs (games, video)")
        self.fullscreen.setToolTip(self.fullscreen_support.note)
        self.fullscreen_note = QLabel(self.fullscreen_support.note)  # said once, where it cannot work
        self.fullscreen_note.setWordWrap(True)
        self.fullscreen_note.setProperty("role", "hint")
        self.fullscreen_note.setVisible(not self.fullscreen_support.available)
        self._offered = False  # the gentler in-use set was proposed once since set_limits
        self.programs = QLineEdit()
        self.programs.setPlaceholderText("e.g. blender, steam (comma separated)")
        self.schedule = ScheduleEditor()
        self.in_use_note = QLabel()
        self.in_use_note.setWordWrap(True)
        self.in_use_note.setProperty("role", "hint")
        self.in_force = QLabel()  # what the node runs under now (show_in_force), hidden until told
        self.in_force.setProperty("role", "hint")
        self.in_force.hide()
        self.problem = QLabel()  # what is wrong with the form now, in words; empty when nothing
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet(ERROR_STYLE)
        self._lay_out(compact)
        self.set_limits(limits)
        for box in (self.only_idle, self.separate):
            box.toggled.connect(self._update_states)
        self.separate.toggled.connect(self._offer_in_use_caps)
        self._watch_edits()
        guard_wheel(self)

    def _lay_out(self, compact: bool) -> None:
        form = QFormLayout()
        form.addRow("Use GPUs", self.gpu_ids)
        form.addRow("Memory", self.memory)
        form.addRow("Disk cap", self.disk)
        form.addRow(self.only_idle)
        form.addRow("Idle means", self.idle_minutes)
        form.addRow(self.separate)
        caps = QHBoxLayout() if not compact else QVBoxLayout()
        caps.addWidget(self.in_use_caps)
        caps.addWidget(self.idle_caps)
        pauses = QFormLayout()
        pauses.addRow(self.battery)
        pauses.addRow(self.fullscreen)
        pauses.addRow(self.fullscreen_note)
        pauses.addRow("Pause while running", self.programs)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addLayout(caps)
        layout.addWidget(self.in_use_note)
        layout.addWidget(self.in_force)
        layout.addLayout(pauses)
        if not compact:
            layout.addWidget(self.schedule)
        layout.addWidget(self.problem)

    def _watch_edits(self) -> None:
        for editor in (self.idle_caps, self.in_use_caps):
            for spin in (editor.cpu_threads, editor.cpu_share, editor.gpu_share, editor.upload, editor.download):
                spin.valueChanged.connect(self._update_states)
        for line in (self.gpu_ids, self.programs):
            line.textChanged.connect(self._update_states)
        for on, start, end in self.schedule.rows:
            on.toggled.connect(self._update_states)
            start.valueChanged.connect(self._update_states)
            end.valueChanged.connect(self._update_states)

    def set_limits(self, limits: ResourceLimits) -> None:
        self._base = limits
        self._offered = limits.in_use is not None
        self.idle_caps.set_caps(_idle_caps(limits))
        self.separate.blockSignals(True)  # loading is not the volunteer asking for a fresh in-use set
        self.separate.setChecked(limits.in_use is not None)
        self.separate.blockSignals(False)
        self.in_use_caps.set_caps(limits.in_use if limits.in_use is not None else _idle_caps(limits))
        self.gpu_ids.setText(",".join(str(i) for i in limits.gpu_ids))
        self.memory.setValue(round(limits.memory_fraction * 100))
        self.disk.setValue(limits.disk_bytes / GB)
        self.only_idle.setChecked(limits.only_when_idle)
        self.idle_minutes.setValue(limits.idle_minutes)
        self.battery.setChecked(limits.pause_on_battery)
        self.fullscreen.setChecked(limits.pause_when_fullscreen)
        self.programs.setText(", ".join(limits.pause_when_running))
        self.schedule.set_schedule(limits.schedule)
        self._update_states()

    def show_in_force(self, text: str) -> None:
        """The caps the node runs under right now (connect ActivityGuard.caps_changed here)."""
        self.in_force.setText(f"In force now: {text}" if text else "")
        self.in_force.setVisible(bool(text))

    def _offer_in_use_caps(self, separate: bool) -> None:
        """Turning separate limits on starts the in-use set gentler than the idle one."""
        if separate and not self._offered:
            self._offered = True
            self.in_use_caps.set_caps(gentler_in_use(self.idle_caps.caps()))
            self._update_states()

    def _update_states(self) -> None:
        """Grey what does not apply, say why, and show what is wrong (limits() would refuse it)."""
        only_idle, separate = self.only_idle.isChecked(), self.separate.isChecked()
        self.idle_minutes.setEnabled(only_idle or separate)
        self.separate.setEnabled(not only_idle)
        self.in_use_caps.setEnabled(separate and not only_idle)
        self.fullscreen.setEnabled(self.fullscreen_support.available)
        # The idle column's title says when it applies, as the note below does.
        self.idle_caps.setTitle(IDLE_TITLE if only_idle or separate else ALWAYS_TITLE)
        if only_idle:
            note = ("While you use the computer the node is paused (Run only when idle), so it has no "
                    "in-use limits.")
        elif not separate:
            note = "The same limits apply whether or not you use the computer."
        else:
            note = (f"The in-use limits apply from your first keystroke until {self.idle_minutes.value()} min "
                    "without input.")
            gentler = self._gentler_warning()
            if gentler:
                note += " " + gentler
        self.in_use_note.setText(note)
        try:
            self.limits()
        except ConfigError as exc:
            self.problem.setText(str(exc))
        else:
            self.problem.setText("")

    def _gentler_warning(self) -> str:
        idle, in_use = self.idle_caps.caps(), self.in_use_caps.caps()
        more = [name for name, a, b in (("CPU share", in_use.cpu_share, idle.cpu_share),
                                        ("GPU share", in_use.gpu_share, idle.gpu_share)) if a > b]
        if (in_use.cpu_threads or self.idle_caps._cores) > (idle.cpu_threads or self.idle_caps._cores):
            more.append("CPU threads")
        if not more:
            return ""
        return f"Note: while you use the computer the node may take more ({', '.join(more)}) than while idle."

    def limits(self) -> ResourceLimits:
        """The form as ResourceLimits; raises ConfigError with the field's problem."""
        programs = tuple(p.strip() for p in self.programs.text().split(",") if p.strip())
        idle = self.idle_caps.caps()
        in_use = self.in_use_caps.caps() if self.separate.isChecked() else None
        limits = dataclasses.replace(
            self._base,
            cpu_threads=idle.cpu_threads,
            cpu_share=idle.cpu_share,
            gpu_share=idle.gpu_share,
            upload_bytes_per_s=idle.upload_bytes_per_s,
            download_bytes_per_s=idle.download_bytes_per_s,
            in_use=in_use,
            gpu_ids=_parse_ids(self.gpu_ids.text()),
            memory_fraction=self.memory.value() / 100,
            disk_bytes=int(self.disk.value() * GB),
            only_when_idle=self.only_idle.isChecked(),
            idle_minutes=self.idle_minutes.value(),
            pause_on_battery=self.battery.isChecked(),
            pause_when_fullscreen=self.fullscreen.isChecked(),
            pause_when_running=programs,
            schedule=self.schedule.schedule(),
        )
        _validate(limits)
        return limits


def _validate(limits: ResourceLimits) -> None:
    """ResourceLimits.validate in the form's words (the set's title rather than the TOML key)."""
    for day, start, end in limits.schedule:
        if start >= end:
            raise ConfigError(f"Weekly schedule, {DAYS[day]}: 'to' ({end}:00) must be after 'from' ({start}:00)")
    try:
        limits.validate()
    except ConfigError as exc:
        text = str(exc)
        for key, label in (("limits.in_use:", "While you use the computer:"), ("limits:", "While the computer is idle:")):
            text = text.replace(key, label)
        for key, label in (("cpu_share", "CPU share"), ("gpu_share", "GPU share"),
                           ("upload_bytes_per_s", "upload cap"), ("download_bytes_per_s", "download cap"),
                           ("65536 (64 KiB/s) or unset", "0.06 MB/s (64 KiB/s) or unlimited")):
            text = text.replace(key, label)
        raise ConfigError(text) from exc
