"""The screenshot script renders every page, wizard step and dialog, in light and dark, to
non-empty PNG files."""

from __future__ import annotations

from PySide6.QtGui import QImage

from app.ui import screenshots

PAGES = ["dashboard", "contribute", "wallet", "governance", "network", "try-the-model", "settings", "logs"]


def test_screenshot_script_renders_every_page_and_wizard_step(qtbot, tmp_path) -> None:  # noqa: ANN001
    assert screenshots.main(["--out", str(tmp_path), "--size", "900x640", "--theme", "light"]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    pages = [n for n in names if n.startswith("page-")]
    steps = [n for n in names if n.startswith("wizard-")]
    assert [n.split("-", 2)[2][:-4] for n in pages] == PAGES
    assert len(steps) == len(screenshots.WIZARD_STEPS)
    image = QImage(str(tmp_path / pages[0]))
    assert image.width() == 900 and image.height() >= 640  # the window may not shrink below its minimum
    colours = {image.pixel(x, y) for x in range(0, 900, 37) for y in range(0, 640, 29)}
    assert len(colours) > 5, "the page rendered blank"


def test_by_default_both_themes_and_every_dialog_are_rendered(qtbot, tmp_path) -> None:  # noqa: ANN001
    assert screenshots.main(["--out", str(tmp_path), "--size", "900x640"]) == 0
    backgrounds = {}
    for theme in screenshots.THEMES:
        names = sorted(p.name for p in (tmp_path / theme).glob("*.png"))
        dialogs = [n.split("-", 2)[2][:-4] for n in names if n.startswith("dialog-")]
        assert dialogs == list(screenshots.DIALOGS)
        assert len([n for n in names if n.startswith("page-")]) == len(PAGES)
        failure = QImage(str(tmp_path / theme / "dialog-1-start-failure.png"))
        assert failure.width() > 200 and failure.height() > 80
        backgrounds[theme] = QImage(str(tmp_path / theme / "page-05-network.png")).pixel(890, 630)
    assert backgrounds["light"] != backgrounds["dark"]
