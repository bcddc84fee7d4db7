"""Light and dark themes: a Fusion palette plus a small style sheet from resources/styles.

"system" follows the platform's colour scheme (Qt 6.5+ ``styleHints().colorScheme()``), and
re-applies when the volunteer switches it in the OS.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCharts import QChart, QChartView
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

STYLES_DIR = Path(__file__).resolve().parents[2] / "resources" / "styles"


def resolve_theme(choice: str) -> str:
    """``"system"`` -> ``"light"``/``"dark"`` from the platform; others unchanged."""
    if choice in ("light", "dark"):
        return choice
    hints = QGuiApplication.styleHints()
    return "dark" if hints.colorScheme() == Qt.ColorScheme.Dark else "light"


def _dark_palette() -> QPalette:
    palette = QPalette()
    base, window, text = QColor("#1e1f22"), QColor("#2b2d31"), QColor("#e6e6e6")
    palette.setColor(QPalette.ColorRole.Window, window)
    palette.setColor(QPalette.ColorRole.WindowText, text)
    palette.setColor(QPalette.ColorRole.Base, base)
    palette.setColor(QPalette.ColorRole.AlternateBase, window)
    palette.setColor(QPalette.ColorRole.Text, text)
    palette.setColor(QPalette.ColorRole.Button, window)
    palette.setColor(QPalette.ColorRole.ButtonText, text)
    palette.setColor(QPalette.ColorRole.ToolTipBase, base)
    palette.setColor(QPalette.ColorRole.ToolTipText, text)
    palette.setColor(QPalette.ColorRole.Highlight, QColor("#3b7dd8"))
    palette.setColor(QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
    palette.setColor(QPalette.ColorRole.PlaceholderText, QColor("#8a8a8a"))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#7a7a7a"))
    return palette


def apply_theme(app: QApplication, choice: str) -> str:
    """Apply the theme to the whole app; returns the resolved ``"light"`` or ``"dark"``."""
    resolved = resolve_theme(choice)
    # Set the style once: replacing it while widgets carry their own style sheets crashed Qt
    # (seen with PySide6 6.12 when switching theme with the wizard open); palettes switch safely.
    if app.property("neuroshard_style_set") is not True:
        app.setStyle("Fusion")
        app.setProperty("neuroshard_style_set", True)
    app.setPalette(_dark_palette() if resolved == "dark" else QStyleFactory.create("Fusion").standardPalette())
    sheet = STYLES_DIR / f"{resolved}.qss"
    app.setStyleSheet(sheet.read_text(encoding="utf-8") if sheet.exists() else "")
    app.setProperty("neuroshard_theme", resolved)
    for widget in app.allWidgets():
        if isinstance(widget, QChartView):
            style_chart(widget.chart())
    return resolved


def style_chart(chart: QChart) -> None:
    """Charts draw their own background: match the app's light or dark theme."""
    app = QApplication.instance()
    dark = app is not None and app.property("neuroshard_theme") == "dark"
    chart.setTheme(QChart.ChartTheme.ChartThemeDark if dark else QChart.ChartTheme.ChartThemeLight)
    chart.setBackgroundRoundness(0)
