"""Icons: the app icon from resources/icons, and state icons drawn at run time for the tray.

Drawing the state dot over the app icon keeps one source image and any number of states without
shipping a PNG per state and size.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap

from app.node.events import NodeState
from app.ui.format import STATE_COLOURS

ICONS_DIR = Path(__file__).resolve().parents[2] / "resources" / "icons"
APP_ICON = ICONS_DIR / "neuroshard.svg"


def app_pixmap(size: int = 64) -> QPixmap:
    icon = QIcon(str(APP_ICON)) if APP_ICON.exists() else QIcon()
    pixmap = icon.pixmap(size, size)
    if pixmap.isNull():  # no SVG plugin or file: a plain disc keeps the tray usable
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setBrush(QColor("#3b4a6b"))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.drawEllipse(QRectF(2, 2, size - 4, size - 4))
        painter.end()
    return pixmap


def app_icon() -> QIcon:
    return QIcon(app_pixmap(64))


def state_icon(state: NodeState, size: int = 64) -> QIcon:
    """The app icon with a dot in the state's colour in the lower right corner."""
    pixmap = app_pixmap(size)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(STATE_COLOURS[state]))
    painter.setPen(QColor("white"))
    dot = size * 0.42
    painter.drawEllipse(QRectF(size - dot - 1, size - dot - 1, dot, dot))
    painter.end()
    return QIcon(pixmap)
