"""A rolling line chart (QtCharts) that redraws at most a few times per second.

Training can report many steps per second; redrawing the chart for each would cost the GUI
thread more than the 50 ms budget, so points are buffered and drawn by a 250 ms timer. Axes tick
on round numbers (app/ui/chart_scale.py); with no point yet the chart says it is waiting.
"""

from __future__ import annotations

from collections import deque

from PySide6.QtCharts import QChart, QChartView, QLineSeries, QValueAxis
from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtGui import QPainter, QResizeEvent
from PySide6.QtWidgets import QLabel, QWidget

from app.ui.chart_scale import scale
from app.ui.theme import style_chart

REDRAW_MS = 250
MAX_POINTS = 600  # ten minutes at one step per second: enough trend without a heavy series


class LiveChart(QChartView):
    def __init__(self, title: str, y_label: str, parent: QWidget | None = None,
                 waiting_text: str = "Waiting for data: the first training step shows here.") -> None:
        chart = QChart()
        chart.setTitle(title)
        chart.legend().hide()
        chart.setMargins(chart.margins() * 0)
        super().__init__(chart, parent)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setMinimumHeight(180)
        self.series = QLineSeries()
        chart.addSeries(self.series)
        self._x_axis, self._y_axis = QValueAxis(), QValueAxis()
        self._x_axis.setTitleText("training step")
        self._x_axis.setLabelFormat("%d")
        self._y_axis.setTitleText(y_label)
        for axis in (self._x_axis, self._y_axis):
            axis.setTickType(QValueAxis.TickType.TicksDynamic)
        style_chart(chart)  # before adding axes: a theme change resets their colours
        chart.addAxis(self._x_axis, Qt.AlignmentFlag.AlignBottom)
        chart.addAxis(self._y_axis, Qt.AlignmentFlag.AlignLeft)
        self.series.attachAxis(self._x_axis)
        self.series.attachAxis(self._y_axis)
        self._points: deque[tuple[float, float]] = deque(maxlen=MAX_POINTS)
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self.redraw)
        self._timer.start()
        self.waiting = QLabel(waiting_text, self)
        self.waiting.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.waiting.setWordWrap(True)
        self.waiting.setProperty("role", "hint")
        self._show_axes(False)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt override)
        super().resizeEvent(event)
        self.waiting.setGeometry(self.rect().adjusted(16, 40, -16, -16))

    def _show_axes(self, shown: bool) -> None:
        self._x_axis.setVisible(shown)
        self._y_axis.setVisible(shown)
        self.waiting.setVisible(not shown)

    def add_point(self, x: float, y: float) -> None:
        if y != y:  # NaN (a diverged step) would break the axis range; skip it
            return
        self._points.append((float(x), float(y)))
        self._dirty = True

    def point_count(self) -> int:
        return len(self._points)

    def points(self) -> list[tuple[float, float]]:
        return list(self._points)

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        points = [QPointF(x, y) for x, y in self._points]
        self.series.replace(points)
        if not points:
            self._show_axes(False)
            return
        xs = [p[0] for p in self._points]
        ys = [p[1] for p in self._points]
        for axis, values, integer in ((self._x_axis, xs, True), (self._y_axis, ys, False)):
            ticks = scale(min(values), max(values), integer=integer)
            axis.setRange(ticks.low, ticks.high)
            axis.setTickAnchor(ticks.low)
            axis.setTickInterval(ticks.step)
            axis.setLabelFormat(f"%.{ticks.decimals}f")
        self._show_axes(True)
