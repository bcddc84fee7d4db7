"""Transaction and reward history: a filterable table with CSV export."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.node.values import UNITS_PER_NEURO
from app.ui.records import HistoryRow

COLUMNS = ("Time", "Kind", "Amount (NEURO)", "Fee (NEURO)", "Counterparty", "Status", "Id")
ALL_KINDS = "All kinds"


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _cells(row: HistoryRow) -> tuple[str, ...]:
    return (_when(row.time), row.kind, f"{row.amount_units / UNITS_PER_NEURO:.6f}",
            f"{row.fee_units / UNITS_PER_NEURO:.6f}", row.counterparty, row.status, row.record_id)


# A proof moves no NEURO itself: its reward is a row of its own once paid. Shown as 0.000000 it read
# as "this work earned nothing" beside a non-zero Pending balance.
PROOF_AMOUNT = "— (its reward is a row of its own when paid)"


def _shown_cells(row: HistoryRow) -> tuple[str, ...]:
    """The table's words for a row (the CSV keeps the plain numbers of ``_cells``)."""
    cells = _cells(row)
    if row.kind == "proof" and row.amount_units == 0:
        cells = (*cells[:2], PROOF_AMOUNT, *cells[3:])
    return cells


class HistoryTable(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[HistoryRow] = []
        self.kind_filter = QComboBox()
        self.kind_filter.addItem(ALL_KINDS)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search address, id, status…")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        filters = QHBoxLayout()
        filters.addWidget(self.kind_filter)
        filters.addWidget(self.search, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filters)
        layout.addWidget(self.table)
        self.kind_filter.currentTextChanged.connect(self._refill)
        self.search.textChanged.connect(self._refill)

    def set_rows(self, rows: list[HistoryRow]) -> None:
        self.rows = sorted(rows, key=lambda r: r.time, reverse=True)
        current = self.kind_filter.currentText()
        self.kind_filter.blockSignals(True)
        self.kind_filter.clear()
        self.kind_filter.addItems([ALL_KINDS, *sorted({r.kind for r in rows})])
        self.kind_filter.setCurrentText(current if self.kind_filter.findText(current) >= 0 else ALL_KINDS)
        self.kind_filter.blockSignals(False)
        self._refill()

    def visible_rows(self) -> list[HistoryRow]:
        kind = self.kind_filter.currentText()
        needle = self.search.text().strip().lower()
        return [
            r for r in self.rows
            if (kind == ALL_KINDS or r.kind == kind)
            and (not needle or any(needle in cell.lower() for cell in _cells(r)))
        ]

    def _refill(self) -> None:
        shown = self.visible_rows()
        self.table.setRowCount(len(shown))
        for index, row in enumerate(shown):
            for column, text in enumerate(_shown_cells(row)):
                self.table.setItem(index, column, QTableWidgetItem(text))

    def export_csv(self, path: Path) -> int:
        """Write the rows the filters show to ``path``; returns how many. Raises OSError."""
        shown = self.visible_rows()
        with Path(path).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(_cells(r) for r in shown)
        return len(shown)
