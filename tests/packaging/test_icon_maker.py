"""The installers' icons: real .ico and .icns containers holding PNGs of the declared sizes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SVG = ROOT / "resources" / "icons" / "neuroshard.svg"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def icons(icon_maker, tmp_path_factory):
    return icon_maker.make_icons(SVG if SVG.is_file() else None, tmp_path_factory.mktemp("icons"))


def test_ico_lists_every_windows_size_with_png_payloads(icon_maker, icons) -> None:
    data = icons.ico.read_bytes()
    reserved, kind, count = struct.unpack("<HHH", data[:6])
    assert (reserved, kind, count) == (0, 1, len(icon_maker.ICO_SIZES))
    for index, size in enumerate(icon_maker.ICO_SIZES):
        width, height, _, _, planes, bits, length, offset = struct.unpack("<BBBBHHII", data[6 + 16 * index:22 + 16 * index])
        assert (width, height) == (size % 256, size % 256)  # 0 stands for 256
        assert (planes, bits) == (1, 32)
        assert _png_size(data[offset:offset + length]) == (size, size)
    assert offset + length == len(data)


def test_icns_elements_are_pngs_of_their_declared_sizes(icon_maker, icons) -> None:
    data = icons.icns.read_bytes()
    assert data[:4] == b"icns" and struct.unpack(">I", data[4:8])[0] == len(data)
    seen, pos = [], 8
    while pos < len(data):
        kind, length = data[pos:pos + 4], struct.unpack(">I", data[pos + 4:pos + 8])[0]
        seen.append(kind)
        expected = dict(icon_maker.ICNS_TYPES)[kind]
        assert _png_size(data[pos + 8:pos + length]) == (expected, expected)
        pos += length
    assert pos == len(data)
    assert seen == [kind for kind, _ in icon_maker.ICNS_TYPES]


def test_linux_png_is_512_pixels(icons) -> None:
    assert _png_size(icons.png.read_bytes()) == (512, 512)


def test_svg_renders_opaque_pixels_where_the_artwork_is(icon_maker) -> None:
    from PySide6.QtGui import QImage

    if not SVG.is_file():
        pytest.skip("no app icon in resources/icons yet")
    image = QImage.fromData(icon_maker.render_png(SVG, 64), "PNG")
    alphas = [image.pixelColor(x, y).alpha() for x in range(0, 64, 4) for y in range(0, 64, 4)]
    assert max(alphas) == 255


def test_missing_svg_falls_back_to_a_disc(icon_maker, tmp_path: Path) -> None:
    from PySide6.QtGui import QImage

    image = QImage.fromData(icon_maker.render_png(tmp_path / "absent.svg", 64), "PNG")
    assert image.width() == 64
    assert image.pixelColor(32, 32).alpha() == 255  # centre of the disc
    assert image.pixelColor(0, 0).alpha() == 0  # outside it


def test_icns_refuses_a_missing_size(icon_maker) -> None:
    with pytest.raises(icon_maker.IconError, match="1024"):
        icon_maker.icns_bytes({size: b"x" for _, size in icon_maker.ICNS_TYPES if size != 1024})
