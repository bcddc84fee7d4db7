"""First run: the wizard is clicked through (create wallet, phrase, confirm, real hardware check,
modes, limits, join), the settings land in config.toml, and the real engine starts training."""

from __future__ import annotations

from PySide6.QtWidgets import QWizard

from app.node.config import apply_file_settings, load_config_file
from app.node.events import NodeState
from app.ui import plain_words
from app.ui.app import GuiApp, needs_wizard
from app.ui.wizard.state import PageId
from tests.ui.funded_ledger import PASSWORD, fast_keystore


def next_page(qtbot, wizard, expected: PageId, timeout: int = 20_000) -> None:  # noqa: ANN001
    wizard.next()
    qtbot.waitUntil(lambda: wizard.currentId() == expected, timeout=timeout)


def test_first_run_wizard_creates_wallet_measures_and_joins(qtbot, config) -> None:  # noqa: ANN001
    assert needs_wizard(config.data_dir, fast_keystore)
    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    wizard = app.wizard
    assert wizard is not None and app.controller.engine is None  # nothing runs before Join
    assert wizard.currentId() == PageId.WELCOME
    next_page(qtbot, wizard, PageId.WALLET)
    page = wizard.wallet
    page.password.setText("short")
    page.confirm.setText("short")
    wizard.next()
    assert wizard.currentId() == PageId.WALLET and "at least 8" in page.error.text()
    page.password.setText(PASSWORD)
    page.confirm.setText(PASSWORD + "x")
    wizard.next()
    assert "differ" in page.error.text()
    page.confirm.setText(PASSWORD)
    next_page(qtbot, wizard, PageId.PHRASE)
    words = wizard.phrase.words()
    assert len(words) == 24 and fast_keystore(config.data_dir).has_key()
    assert not wizard.button(QWizard.WizardButton.NextButton).isEnabled()
    wizard.phrase.written.setChecked(True)
    next_page(qtbot, wizard, PageId.CONFIRM)
    confirm = wizard.confirm
    for edit in confirm.edits:
        edit.setText("wrong")
    wizard.next()
    assert wizard.currentId() == PageId.CONFIRM and "does not match" in confirm.error.text()
    for position, edit in zip(confirm.positions, confirm.edits, strict=True):
        edit.setText(words[position])
    backup = config.data_dir.parent / "wallet.backup"
    confirm.save_backup(backup)
    qtbot.waitUntil(lambda: "saved" in confirm.backup_status.text(), timeout=10_000)
    next_page(qtbot, wizard, PageId.HARDWARE)
    assert wizard.state.phrase == ""  # shown once, then forgotten
    qtbot.waitUntil(lambda: wizard.hardware.isComplete(), timeout=60_000)
    assert wizard.state.hardware is not None
    assert "ms per reference layer" in wizard.hardware.result.text()
    next_page(qtbot, wizard, PageId.MODES)
    plan = wizard.state.plan
    for mode, reason in plan.unavailable:
        assert not wizard.modes.boxes[mode].isEnabled() and reason in wizard.modes.reasons[mode].text()
    wizard.modes.boxes["data"].setChecked(False)
    next_page(qtbot, wizard, PageId.LIMITS)
    wizard.limits.form.memory.setValue(40)
    wizard.limits.form.schedule.rows[0][0].setChecked(True)
    next_page(qtbot, wizard, PageId.REACH)
    # asked, not assumed: Next waits for an answer; the firewall prompt is explained
    assert not wizard.button(QWizard.WizardButton.NextButton).isEnabled()
    assert "firewall" in wizard.reach.firewall.text()
    wizard.reach.choices["this_computer"].setChecked(True)  # tests talk to 127.0.0.0/8 only
    next_page(qtbot, wizard, PageId.JOIN)
    assert plain_words.REACH_CHOICE_WORDS["this_computer"] in wizard.join.summary.text()
    assert "Join" in wizard.buttonText(QWizard.WizardButton.FinishButton)
    # no tracker: the summary says the node will train alone and how to connect, never "finds a network"
    assert plain_words.TRAINING_ALONE in wizard.join.summary.text()
    assert "finds or starts" not in wizard.join.summary.text()
    wizard.button(QWizard.WizardButton.FinishButton).click()
    qtbot.waitUntil(lambda: app.controller.engine is not None, timeout=5_000)
    saved = apply_file_settings(config, load_config_file(config.config_path))
    assert saved.limits.memory_fraction == 0.4
    assert saved.limits.schedule == ((0, 0, 24),)
    assert saved.modes is not None and "data" not in saved.modes
    assert saved.reach == "this_computer"
    qtbot.waitUntil(lambda: app.bridge.state == NodeState.TRAINING, timeout=30_000)
    assert fast_keystore(config.data_dir.parent / "restored").restore_backup(backup, PASSWORD).address == \
        wizard.state.address
    app.dispose()


def test_cancelling_the_wizard_quits_without_starting_the_node(qtbot, config) -> None:  # noqa: ANN001
    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    app.wizard.reject()
    assert app.quitting and app.controller.engine is None
    assert not config.config_path.exists()
    app.dispose()
