"""Spin boxes, combo boxes and sliders ignore the mouse wheel unless they have focus.

A volunteer scrolling a long page (Settings, the wizard's limits) must not change a limit by
passing over it with the pointer: an unfocused control hands the wheel to its parent, so the page
scrolls instead. A click or Tab gives the control focus; then the wheel changes it as usual.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QAbstractSlider, QAbstractSpinBox, QComboBox, QWidget

GUARDED = (QAbstractSpinBox, QComboBox, QAbstractSlider)


class WheelGuard(QObject):
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
        if event.type() == QEvent.Type.Wheel and isinstance(watched, QWidget) and not watched.hasFocus():
            event.ignore()  # not accepted: Qt offers the wheel to the parent (the scroll area)
            return True
        return False


def guard_wheel(root: QWidget) -> WheelGuard:
    """Guard every spin box, combo box and slider under ``root`` (call once its children exist)."""
    guard = WheelGuard(root)
    for kind in GUARDED:
        for control in root.findChildren(kind):
            if control.property("wheel_guarded"):
                continue  # a form guarded on its own (LimitsForm) inside a guarded page
            control.setProperty("wheel_guarded", True)
            control.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # the wheel alone never gives focus
            control.installEventFilter(guard)
    return guard
