"""App icons for the installers, rendered at build time from resources/icons/neuroshard.svg.

Qt draws the SVG at each size; the .ico and .icns containers are written here in a few lines of
``struct`` so the build needs neither Pillow nor macOS's iconutil, and every platform's icon
comes out of any build machine the same. Both containers carry PNG payloads: Windows reads
PNG-compressed .ico entries since Vista, macOS reads PNG icns elements since 10.7.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

# Sizes Windows picks from for the taskbar, Explorer views and the installer (16 to 256 px).
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
# Apple's icns element types with PNG data and the pixel size each holds (Apple's
# "icns" type table: ic07..ic10 for 128..1024, ic11..ic14 the @2x variants of 16..256).
ICNS_TYPES = (
    (b"icp4", 16), (b"icp5", 32), (b"ic11", 32), (b"ic12", 64), (b"ic07", 128),
    (b"ic13", 256), (b"ic08", 256), (b"ic14", 512), (b"ic09", 512), (b"ic10", 1024),
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FALLBACK_COLOUR = "#3b4a6b"  # the tray's fallback disc colour in app/ui/icons.py


class IconError(Exception):
    """An icon could not be rendered or encoded."""


@dataclass(frozen=True)
class IconSet:
    png: Path  # 512 px, for the Linux .desktop entry and the AppImage
    ico: Path
    icns: Path


def _ensure_gui_app() -> object:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    return QGuiApplication.instance() or QGuiApplication(["icon_maker"])


def render_png(svg: Path | None, size: int) -> bytes:
    """PNG bytes of the icon at ``size`` px; a plain disc when the SVG is absent or unreadable."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QRectF, Qt
    from PySide6.QtGui import QColor, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _ensure_gui_app()
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer = QSvgRenderer(str(svg)) if svg is not None and svg.is_file() else None
    if renderer is not None and renderer.isValid():
        renderer.render(painter, QRectF(0, 0, size, size))
    else:
        painter.setBrush(QColor(_FALLBACK_COLOUR))
        painter.setPen(Qt.PenStyle.NoPen)
        margin = size / 16
        painter.drawEllipse(QRectF(margin, margin, size - 2 * margin, size - 2 * margin))
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise IconError(f"Qt could not encode a {size} px PNG")
    return bytes(data.data())


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    """An ICONDIR header, one 16-byte entry per image, then the PNG payloads."""
    sizes = sorted(pngs)
    if not sizes or sizes[-1] > 256:
        raise IconError(f".ico holds 1..256 px images, got sizes {sizes}")
    header = struct.pack("<HHH", 0, 1, len(sizes))
    offset = len(header) + 16 * len(sizes)
    entries, payload = [], []
    for size in sizes:
        data = pngs[size]
        # Width and height are one byte each; 0 stands for 256.
        entries.append(struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(data), offset))
        payload.append(data)
        offset += len(data)
    return header + b"".join(entries) + b"".join(payload)


def icns_bytes(pngs: dict[int, bytes]) -> bytes:
    """The 'icns' magic and total length, then (type, length, PNG) elements, big-endian."""
    elements = []
    for kind, size in ICNS_TYPES:
        if size not in pngs:
            raise IconError(f".icns element {kind.decode()} needs a {size} px image")
        elements.append(kind + struct.pack(">I", 8 + len(pngs[size])) + pngs[size])
    body = b"".join(elements)
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def make_icons(svg: Path | None, out_dir: Path) -> IconSet:
    """Render every size once and write neuroshard.png/.ico/.icns into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = sorted(set(ICO_SIZES) | {size for _, size in ICNS_TYPES})
    pngs = {size: render_png(svg, size) for size in sizes}
    icons = IconSet(png=out_dir / "neuroshard.png", ico=out_dir / "neuroshard.ico", icns=out_dir / "neuroshard.icns")
    icons.png.write_bytes(pngs[512])
    icons.ico.write_bytes(ico_bytes({size: pngs[size] for size in ICO_SIZES}))
    icons.icns.write_bytes(icns_bytes(pngs))
    return icons
