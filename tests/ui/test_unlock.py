"""Starting with a password-protected wallet: the app asks, refuses a wrong password, then starts."""

from __future__ import annotations

from app.node.events import NodeState
from app.ui.app import GuiApp
from tests.ui.funded_ledger import PASSWORD, fast_keystore


def test_wallet_password_is_asked_before_the_node_starts(qtbot, config, locked_wallet_dir) -> None:  # noqa: ANN001
    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    qtbot.waitUntil(lambda: app.unlock.dialog is not None and app.unlock.dialog.isVisible(), timeout=10_000)
    assert app.controller.engine is None
    first = app.unlock.dialog
    first.password.setText("not it")
    assert first.try_accept()
    qtbot.waitUntil(lambda: app.unlock.dialog is not first, timeout=10_000)
    assert "Wrong password" in app.unlock.dialog.error.text() and app.controller.engine is None
    app.unlock.dialog.password.setText(PASSWORD)
    assert app.unlock.dialog.try_accept()
    qtbot.waitUntil(lambda: app.bridge.state == NodeState.TRAINING, timeout=30_000)
    app.dispose()


def test_cancelling_the_unlock_keeps_the_window_and_offers_to_retry(qtbot, config, locked_wallet_dir) -> None:  # noqa: ANN001
    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    qtbot.waitUntil(lambda: app.unlock.dialog is not None and app.unlock.dialog.isVisible(), timeout=10_000)
    app.unlock.dialog.reject()
    bar = app.window.message_bar
    assert "wallet is locked" in bar.text() and bar.action.isVisibleTo(bar)
    bar.action.click()
    qtbot.waitUntil(lambda: app.unlock.dialog is not None and app.unlock.dialog.isVisible(), timeout=10_000)
    app.unlock.dialog.password.setText(PASSWORD)
    app.unlock.dialog.try_accept()
    qtbot.waitUntil(lambda: app.bridge.state == NodeState.TRAINING, timeout=30_000)
    app.dispose()


def test_a_damaged_wallet_is_reported_instead_of_asking_for_a_password(qtbot, config, locked_wallet_dir) -> None:  # noqa: ANN001
    (locked_wallet_dir / "wallet.json").write_text("{ not json")
    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    assert app.wizard is None  # a damaged wallet is not a first run: no second key over it
    bar = app.window.message_bar
    qtbot.waitUntil(lambda: "cannot start" in bar.text(), timeout=10_000)
    assert "damaged" in bar.text() and app.unlock.dialog is None and app.controller.engine is None
    app.dispose()
