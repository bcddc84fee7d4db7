"""One cell per model layer, coloured by how many replicas hold it (DESIGN.md: MIN_REPLICAS = 2)."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

MIN_REPLICAS = 2  # DESIGN.md §4: a layer held by fewer nodes is at risk when one leaves


def replica_colour(count: int) -> QColor:
    if count <= 0:
        return QColor("#d0342c")  # nobody holds it: training of this layer is stalled
    if count < MIN_REPLICAS:
        return QColor("#d89b00")  # one holder: works, but no failover
    return QColor("#2e9d4a")


class CoverageBar(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.replicas: tuple[int, ...] = ()
        self.setMinimumHeight(34)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_replicas(self, replicas: tuple[int, ...]) -> None:
        self.replicas = tuple(replicas)
        covered = sum(1 for r in self.replicas if r >= MIN_REPLICAS)
        self.setToolTip(
            f"{len(self.replicas)} layers; {covered} with at least {MIN_REPLICAS} replicas; "
            + ", ".join(f"L{i}: {r}" for i, r in enumerate(self.replicas))
        )
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt override)
        painter = QPainter(self)
        if not self.replicas:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no layer map yet")
            return
        width = self.width() / len(self.replicas)
        for index, count in enumerate(self.replicas):
            cell = QRectF(index * width, 0, max(1.0, width - 1), self.height())
            painter.fillRect(cell, replica_colour(count))
            if width > 14:
                painter.setPen(QColor("white"))
                painter.drawText(cell, Qt.AlignmentFlag.AlignCenter, str(count))
