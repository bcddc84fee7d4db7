"""Earnings by day, stacked by kind of work (QtCharts)."""

from __future__ import annotations

from collections import defaultdict

from PySide6.QtCharts import QBarCategoryAxis, QBarSet, QChart, QChartView, QStackedBarSeries, QValueAxis
from PySide6.QtCore import Qt
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QWidget

from app.node.values import UNITS_PER_NEURO
from app.ui.records import EarningRow
from app.ui.theme import style_chart

DAYS_SHOWN = 14


class EarningsChart(QChartView):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(QChart(), parent)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setMinimumHeight(200)
        self.chart().setTitle("Earnings per day, by kind of work (NEURO)")
        style_chart(self.chart())
        self.kinds: tuple[str, ...] = ()
        self.days: tuple[str, ...] = ()

    def set_rows(self, rows: list[EarningRow]) -> None:
        totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for row in rows:
            totals[row.kind][row.day] += row.units
        self.days = tuple(sorted({r.day for r in rows})[-DAYS_SHOWN:])
        self.kinds = tuple(sorted(totals))
        chart = self.chart()
        chart.removeAllSeries()
        for axis in chart.axes():
            chart.removeAxis(axis)
        series = QStackedBarSeries()
        top = 0.0
        for kind in self.kinds:
            bars = QBarSet(kind)
            bars.append([totals[kind][day] / UNITS_PER_NEURO for day in self.days])
            series.append(bars)
        for day in self.days:
            top = max(top, sum(totals[k][day] for k in self.kinds) / UNITS_PER_NEURO)
        chart.addSeries(series)
        x_axis, y_axis = QBarCategoryAxis(), QValueAxis()
        x_axis.append([d[5:] for d in self.days] or ["—"])
        y_axis.setRange(0, top * 1.15 or 1.0)
        chart.addAxis(x_axis, Qt.AlignmentFlag.AlignBottom)
        chart.addAxis(y_axis, Qt.AlignmentFlag.AlignLeft)
        series.attachAxis(x_axis)
        series.attachAxis(y_axis)
        chart.legend().setVisible(bool(self.kinds))
