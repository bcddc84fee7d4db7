"""Volunteer pages speak plain words (expert terms only in tooltips) and the charts read at a
glance: round ticks that never repeat, a range that does not magnify noise, and "waiting for
data" before the first point (real runtime behind the window)."""

from __future__ import annotations

import re

from PySide6.QtWidgets import QAbstractButton, QGroupBox, QLabel, QWidget

from app.ui.chart_scale import scale
from app.ui.widgets.live_chart import LiveChart
from tests.ui.helpers import wait_training

JARGON = re.compile(r"\b(driver|validator|quorum|activations?|genesis|pseudo-gradients?|replicas?|DiLoCo)\b",
                    re.IGNORECASE)
BARE_TIER = re.compile(r"(?<!tier )(?<!tier T[1-5]–)\bT[1-5]\b")


def visible_texts(page: QWidget) -> list[str]:
    texts = [w.text() for w in page.findChildren(QLabel) if w.isVisibleTo(page)]
    texts += [w.text() for w in page.findChildren(QAbstractButton) if w.isVisibleTo(page)]
    texts += [w.title() for w in page.findChildren(QGroupBox) if w.isVisibleTo(page)]
    return [t for t in texts if t]


def test_volunteer_pages_use_plain_words_and_keep_the_terms_in_tooltips(qtbot, shared_gui) -> None:  # noqa: ANN001
    wait_training(qtbot, shared_gui)
    window = shared_gui.window
    assert "driver" in shared_gui.bridge.latest("status").detail or "validator" in shared_gui.bridge.latest("status").detail
    for page in (window.dashboard, window.contribute, window.network):
        for text in visible_texts(page):
            assert not JARGON.search(text), f"{page.title}: {text!r}"
            assert not BARE_TIER.search(text), f"{page.title}: {text!r}"
    layers = shared_gui.bridge.latest("layers")
    assert all(role in window.dashboard.role_label.toolTip() for role in layers.roles)
    assert "quorum" in window.contribute.rows["pipeline"].toolTip()
    assert shared_gui.bridge.latest("status").detail in window.dashboard.badge.toolTip()


def test_the_loss_chart_ticks_on_round_steps_over_a_sensible_range(qtbot, shared_gui) -> None:  # noqa: ANN001
    wait_training(qtbot, shared_gui)
    chart = shared_gui.window.dashboard.loss_chart
    qtbot.waitUntil(lambda: chart.point_count() >= 3, timeout=30_000)
    chart.redraw()
    x, y = chart._x_axis, chart._y_axis
    labels = [int(x.min() + i * x.tickInterval()) for i in range(int((x.max() - x.min()) / x.tickInterval()) + 1)]
    assert x.tickInterval() >= 1 and x.tickInterval() == int(x.tickInterval())
    assert len(labels) == len(set(labels))
    losses = [p[1] for p in chart.points()]
    assert y.min() <= min(losses) and y.max() >= max(losses)
    assert y.max() - y.min() >= 0.1 * max(abs(v) for v in losses) - 1e-9
    assert not chart.waiting.isVisibleTo(chart)


def test_a_chart_with_no_data_says_it_is_waiting(qtbot) -> None:  # noqa: ANN001
    chart = LiveChart("Speed", "tokens per second")
    qtbot.addWidget(chart)
    chart.redraw()
    assert chart.waiting.isVisibleTo(chart) and "Waiting for data" in chart.waiting.text()
    chart.add_point(1, 5.0)
    chart.redraw()
    assert not chart.waiting.isVisibleTo(chart)


def test_noise_is_not_magnified_and_ticks_never_repeat() -> None:
    flat = scale(5.602, 5.687)
    assert flat.high - flat.low >= 0.5  # 5.6 ± noise reads as the flat line it is
    steps = scale(1, 3, integer=True)
    assert steps.step == 1 and steps.ticks == 3  # 1 2 3, not 1 1 2 2 3
    assert scale(0.01, 0.02).decimals == 3
    assert scale(12, 512).low == 0
