"""New volunteers start gentle (a share of the computer while they use it, all of it when idle),
the labels say which limits apply now, and Snooze is in the window too (real runtime behind)."""

from __future__ import annotations

from app.node.config import ResourceLimits, apply_file_settings, load_config_file
from app.node.events import NodeState
from app.ui.app import GuiApp
from app.ui.widgets.limits_form import ALWAYS_TITLE, IDLE_TITLE, LimitsForm
from app.ui.wizard.state import PageId
from tests.ui.funded_ledger import PASSWORD, fast_keystore
from tests.ui.helpers import wait_training
from tests.ui.test_wizard import next_page


def test_a_new_volunteer_starts_with_half_the_computer_while_in_use(qtbot, config) -> None:  # noqa: ANN001
    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    wizard = app.wizard
    form = wizard.limits.form
    assert form.separate.isChecked()
    assert form.in_use_caps.cpu_share.value() == 50 and form.idle_caps.cpu_share.value() == 100
    assert form.idle_caps.title() == IDLE_TITLE and "first keystroke" in form.in_use_note.text()
    next_page(qtbot, wizard, PageId.WALLET)
    wizard.wallet.password.setText(PASSWORD)
    wizard.wallet.confirm.setText(PASSWORD)
    next_page(qtbot, wizard, PageId.PHRASE)
    wizard.phrase.written.setChecked(True)
    next_page(qtbot, wizard, PageId.CONFIRM)
    for position, edit in zip(wizard.confirm.positions, wizard.confirm.edits, strict=True):
        edit.setText(wizard.phrase.words()[position])
    next_page(qtbot, wizard, PageId.HARDWARE)
    wizard.hardware.cancel()
    next_page(qtbot, wizard, PageId.MODES)
    next_page(qtbot, wizard, PageId.LIMITS)
    next_page(qtbot, wizard, PageId.REACH)
    wizard.reach.choices["this_computer"].setChecked(True)  # tests talk to 127.0.0.0/8 only
    next_page(qtbot, wizard, PageId.JOIN)
    wizard.accept()
    saved = apply_file_settings(config, load_config_file(config.config_path)).limits
    assert saved.in_use is not None and saved.in_use.cpu_share == 0.5 and saved.cpu_share == 1.0
    app.dispose()


def test_the_idle_column_is_titled_for_when_it_applies(qtbot) -> None:  # noqa: ANN001
    form = LimitsForm(ResourceLimits())
    qtbot.addWidget(form)
    assert form.idle_caps.title() == ALWAYS_TITLE and "same limits apply" in form.in_use_note.text()
    form.separate.setChecked(True)
    assert form.idle_caps.title() == IDLE_TITLE
    form.separate.setChecked(False)
    form.only_idle.setChecked(True)
    assert form.idle_caps.title() == IDLE_TITLE


def test_the_dashboard_says_which_limits_apply_now(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    label = gui.window.dashboard.limits_label
    qtbot.waitUntil(lambda: label.text().startswith("The same at all times —"), timeout=15_000)
    assert "all but one core" in label.text() and "Limits:" not in label.text()


def test_snooze_from_the_window_pauses_until_resumed(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    page = gui.window.dashboard
    assert page.snooze_button.isEnabled()
    page.snooze_actions["1h"].trigger()
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.PAUSED, timeout=5_000)
    qtbot.waitUntil(lambda: page.snoozed_label.isVisibleTo(page), timeout=5_000)
    assert page.snoozed_label.text().startswith("Snoozed until ") and page.pause_button.text() == "Resume"
    page.pause_button.click()
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.TRAINING, timeout=10_000)
    assert not page.snoozed_label.isVisibleTo(page)
