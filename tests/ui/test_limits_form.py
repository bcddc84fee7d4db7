"""The limits form shows and edits both sets of caps (idle, in use), greys what cannot apply, and
explains a bad combination where the volunteer is looking."""

from __future__ import annotations

import dataclasses

import pytest

from app.node.config import ConfigError, ResourceLimits, UsageCaps
from app.ui import fullscreen
from app.ui.widgets import limits_form
from app.ui.widgets.limits_form import LimitsForm

KIB, MIB = 2**10, 2**20

BOTH = ResourceLimits(
    cpu_threads=1, cpu_share=0.8, gpu_share=0.9, upload_bytes_per_s=100 * KIB, download_bytes_per_s=5 * MIB,
    in_use=UsageCaps(cpu_threads=1, cpu_share=0.3, gpu_share=0.25, upload_bytes_per_s=64 * KIB),
    memory_fraction=0.4, gpu_ids=(0,), disk_bytes=3 * 2**30, idle_minutes=7, pause_on_battery=False,
    pause_when_fullscreen=True, pause_when_running=("steam",), schedule=((2, 8, 18),),
)


@pytest.fixture
def available(monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform that can tell full screen (the real probe's answer depends on $DISPLAY here)."""
    monkeypatch.setattr(limits_form, "fullscreen_support", lambda: fullscreen.Support(True, "via EWMH"))


def make(qtbot, limits: ResourceLimits) -> LimitsForm:  # noqa: ANN001 (pytest-qt bot)
    form = LimitsForm(limits)
    qtbot.addWidget(form)
    return form


def test_both_sets_round_trip(qtbot, available) -> None:  # noqa: ANN001
    form = make(qtbot, BOTH)
    assert form.limits() == BOTH  # 100 KiB/s shows as 0.10 MB/s but is kept exact when untouched
    assert form.separate.isChecked() and form.in_use_caps.isEnabled()
    assert form.in_use_caps.cpu_share.value() == 30 and form.idle_caps.cpu_share.value() == 80
    form.set_limits(ResourceLimits())
    assert form.limits() == ResourceLimits() and not form.separate.isChecked()
    assert form.in_force.isHidden()
    form.show_in_force("While you use the computer — 30 % CPU")  # what ActivityGuard.caps_changed says
    assert not form.in_force.isHidden()
    assert form.in_force.text() == "In force now: While you use the computer — 30 % CPU"
    form.set_limits(BOTH)
    assert form.limits() == BOTH


def test_editing_each_set_and_turning_separate_limits_on_and_off(qtbot, available) -> None:  # noqa: ANN001
    form = make(qtbot, ResourceLimits(cpu_share=0.9))
    assert not form.in_use_caps.isEnabled() and not form.idle_minutes.isEnabled()
    assert "same limits apply" in form.in_use_note.text()
    form.separate.setChecked(True)
    # Offered gentler than the idle set to start with; "idle" now matters, so its minutes are editable.
    assert form.in_use_caps.isEnabled() and form.idle_minutes.isEnabled()
    assert form.limits().in_use == UsageCaps(cpu_share=0.5, gpu_share=0.5)
    form.in_use_caps.cpu_share.setValue(20)
    form.in_use_caps.upload.setValue(0.5)
    form.idle_caps.download.setValue(2)
    limits = form.limits()
    assert limits.in_use == UsageCaps(cpu_share=0.2, gpu_share=0.5, upload_bytes_per_s=MIB // 2)
    assert limits.caps(in_use=False) == UsageCaps(cpu_share=0.9, download_bytes_per_s=2 * MIB)
    form.separate.setChecked(False)
    assert form.limits().in_use is None and not form.in_use_caps.isEnabled()
    form.separate.setChecked(True)  # back on: the volunteer's edits are still there, not re-offered
    assert form.limits().in_use.cpu_share == 0.2


def test_run_only_when_idle_greys_the_in_use_set_and_says_why(qtbot, available) -> None:  # noqa: ANN001
    form = make(qtbot, BOTH)
    form.only_idle.setChecked(True)
    assert not form.separate.isEnabled() and not form.in_use_caps.isEnabled()
    assert "paused" in form.in_use_note.text()
    assert form.limits().in_use == BOTH.in_use  # kept for when idle-only is turned off again
    form.only_idle.setChecked(False)
    assert form.in_use_caps.isEnabled()


def test_problems_are_explained_inline_and_refused(qtbot, available) -> None:  # noqa: ANN001
    form = make(qtbot, BOTH)
    assert form.problem.text() == ""
    form.in_use_caps.upload.setValue(0.01)  # 10 KiB/s: below what the node can pace
    assert "While you use the computer" in form.problem.text() and "upload cap" in form.problem.text()
    with pytest.raises(ConfigError, match="upload cap"):
        form.limits()
    form.in_use_caps.upload.setValue(0)  # unlimited
    assert form.problem.text() == ""
    wednesday = form.schedule.rows[2]
    wednesday[1].setValue(20)  # from 20:00 to 18:00
    assert "Wed" in form.problem.text()
    with pytest.raises(ConfigError, match="Wed"):
        form.limits()
    wednesday[2].setValue(22)
    assert form.problem.text() == ""
    form.gpu_ids.setText("first")
    assert "GPUs" in form.problem.text()
    form.gpu_ids.setText("0")
    form.in_use_caps.cpu_share.setValue(95)  # allowed, but worth saying: more while in use than idle
    assert "more (CPU share)" in form.in_use_note.text() and form.problem.text() == ""


def test_full_screen_option_greyed_where_it_cannot_be_detected(qtbot, monkeypatch) -> None:  # noqa: ANN001
    note = "Not available on macOS yet: the node cannot tell when an app is full screen."
    monkeypatch.setattr(limits_form, "fullscreen_support", lambda: fullscreen.Support(False, note))
    form = make(qtbot, BOTH)
    assert not form.fullscreen.isEnabled() and form.fullscreen.toolTip() == note
    assert not form.fullscreen_note.isHidden() and form.fullscreen_note.text() == note
    assert form.limits().pause_when_fullscreen  # the saved choice survives a visit from another platform
    monkeypatch.setattr(limits_form, "fullscreen_support", lambda: fullscreen.Support(True, "via EWMH"))
    other = make(qtbot, dataclasses.replace(BOTH, pause_when_fullscreen=False))
    assert other.fullscreen.isEnabled() and other.fullscreen_note.isHidden()
    other.fullscreen.setChecked(True)
    assert other.limits().pause_when_fullscreen
