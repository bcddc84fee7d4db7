"""Controls change only when the volunteer means it: the wheel passes over unfocused boxes, port 0
stays automatic, and Settings refuse what config.toml would refuse (real runtime behind)."""

from __future__ import annotations

import dataclasses

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from app.node.config import ConfigError, apply_file_settings, load_config_file
from app.ui.app import GuiApp
from app.ui.settings_check import validate_settings
from app.ui.wizard.state import PageId
from tests.ui.funded_ledger import fast_keystore
from tests.ui.test_wizard import next_page


def wheel(widget, notches: int = 1) -> None:  # noqa: ANN001
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0),
                        QPoint(0, 120 * notches), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_scrolling_over_settings_changes_no_value_until_a_box_has_focus(qtbot, gui) -> None:  # noqa: ANN001
    window = gui.window
    window.show()
    window.show_page(window.pages.index(window.settings))
    page = window.settings
    share, port, theme = page.limits.idle_caps.cpu_share, page.port, page.theme
    before = (share.value(), port.value(), theme.currentIndex(), page.limits.memory.value())
    for control in (share, port, theme, page.limits.memory):
        wheel(control, -3)
    assert (share.value(), port.value(), theme.currentIndex(), page.limits.memory.value()) == before
    share.setFocus()
    qtbot.waitUntil(share.hasFocus, timeout=5_000)
    wheel(share, -1)
    assert share.value() == before[0] - 1  # focused: the wheel works as usual


def test_the_wizard_limits_ignore_the_wheel_too(qtbot, config) -> None:  # noqa: ANN001
    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    form = app.wizard.limits.form
    before = form.idle_caps.cpu_share.value()
    wheel(form.idle_caps.cpu_share, -2)
    wheel(form.memory, 2)
    assert form.idle_caps.cpu_share.value() == before
    assert form.memory.value() == round(config.limits.memory_fraction * 100)
    assert app.wizard.currentId() == PageId.WELCOME
    next_page(qtbot, app.wizard, PageId.WALLET)
    app.dispose()


def test_port_zero_stays_automatic_through_settings(qtbot, gui, config) -> None:  # noqa: ANN001
    assert config.port == 0
    page = gui.window.settings
    assert page.port.value() == 0 and page.port.text() == "automatic (a free port)"
    assert page.save(), page.message.text()
    assert apply_file_settings(config, load_config_file(config.config_path)).port == 0


def test_settings_refuse_what_the_config_file_reader_refuses(qtbot, gui, config) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="port"):
        validate_settings(dataclasses.replace(config, port=70_000))
    with pytest.raises(ConfigError, match="inner_stepz"):  # config.toml's schema knows every key
        validate_settings(dataclasses.replace(config, training={**config.training, "inner_stepz": 5}))
    page = gui.window.settings
    page.limits.memory.setValue(30)
    assert validate_settings(page.edited_config()).limits.memory_fraction == 0.3
