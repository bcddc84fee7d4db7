"""Logs: the node's log lines with search and a level filter, and "export diagnostics".

Lines arrive as LogLine events, possibly hundreds per second while training; they are buffered
and appended by a 200 ms timer so the GUI thread stays responsive.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.node.config import NodeConfig
from app.node.events import ErrorOccurred, LogLine
from app.ui.bridge import EngineBridge
from app.ui.diagnostics import write_diagnostics
from app.ui.tasks import run_background

MAX_LINES = 5000
FLUSH_MS = 200
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _format(timestamp: float, level: str, message: str) -> str:
    return f"{time.strftime('%H:%M:%S', time.localtime(timestamp))} {level:<7} {message}"


class LogsPage(QWidget):
    title = "Logs"

    def __init__(self, bridge: EngineBridge, config: NodeConfig, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge, self.config = bridge, config
        self.lines: deque[tuple[str, str]] = deque(maxlen=MAX_LINES)  # (level, formatted line)
        self._pending: list[tuple[str, str]] = []
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search the log…")
        self.level = QComboBox()
        self.level.addItems(LEVELS)
        self.level.setCurrentText("INFO")
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(MAX_LINES)
        self.export_button = QPushButton("Export diagnostics…")
        self.message = QLabel()
        self.message.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(QLabel("at least"))
        top.addWidget(self.level)
        top.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.message)
        self.search.textChanged.connect(self._rebuild)
        self.level.currentTextChanged.connect(self._rebuild)
        self.export_button.clicked.connect(self.choose_export)
        bridge.log.connect(self.on_log)
        bridge.error.connect(self.on_error)
        self._timer = QTimer(self)
        self._timer.setInterval(FLUSH_MS)
        self._timer.timeout.connect(self.flush)
        self._timer.start()

    def on_log(self, event: LogLine) -> None:
        self._pending.append((event.level.upper(), _format(event.timestamp, event.level.upper(), event.message)))

    def on_error(self, event: ErrorOccurred) -> None:
        level = "CRITICAL" if event.fatal else "ERROR"
        self._pending.append((level, _format(event.timestamp, level, event.message)))

    def _shown(self, level: str, line: str) -> bool:
        minimum = LEVELS.index(self.level.currentText())
        needle = self.search.text().strip().lower()
        rank = LEVELS.index(level) if level in LEVELS else 1
        return rank >= minimum and (not needle or needle in line.lower())

    def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self.lines.extend(batch)
        shown = [line for level, line in batch if self._shown(level, line)]
        if shown:
            self.view.appendPlainText("\n".join(shown))

    def _rebuild(self) -> None:
        self.flush()
        self.view.setPlainText("\n".join(line for level, line in self.lines if self._shown(level, line)))

    def visible_text(self) -> str:
        return self.view.toPlainText()

    def choose_export(self) -> None:
        default = Path.home() / f"neuroshard-diagnostics-{time.strftime('%Y%m%d-%H%M%S')}.zip"
        path, _ = QFileDialog.getSaveFileName(self, "Export diagnostics", str(default), "Zip files (*.zip)")
        if path:
            self.export(Path(path))

    def export(self, path: Path) -> None:
        self.flush()
        lines = [line for _level, line in self.lines]
        self.message.setText("Writing diagnostics…")
        run_background(lambda: write_diagnostics(path, self.config, lines),
                       lambda written: self.message.setText(f"Diagnostics written to {written} (no keys or "
                                                            "passwords inside)."),
                       lambda m: self.message.setText(f"Could not write diagnostics: {m}"))
