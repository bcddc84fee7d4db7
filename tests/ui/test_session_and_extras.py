"""Auto-lock, finish-then-stop, upgrade banner, reward notifications and start at login."""

from __future__ import annotations

import os

from app.node import autostart
from app.node.events import NodeState, ProofAccepted, UpgradeAvailable
from app.ui.bridge import EngineBridge
from app.ui.tray import NodeTray
from tests.ui.funded_ledger import PASSWORD
from tests.ui.helpers import economy, wait_training


def test_wallet_session_locks_itself_after_inactivity(qtbot, shared_gui) -> None:  # noqa: ANN001
    wait_training(qtbot, shared_gui)
    session = shared_gui.window.session
    session.set_lock_minutes(0.02)  # 1.2 s instead of minutes
    errors: list[str] = []
    session.unlock(PASSWORD, errors.append)
    qtbot.waitUntil(lambda: session.unlocked, timeout=10_000)
    assert economy(shared_gui).session.unlocked
    assert shared_gui.window.wallet.lock_button.text() == "Lock"
    qtbot.waitUntil(lambda: not session.unlocked, timeout=5_000)
    qtbot.waitUntil(lambda: not economy(shared_gui).session.unlocked, timeout=5_000)
    assert shared_gui.window.wallet.lock_button.text() == "Unlock" and not errors
    session.unlock("wrong password", errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=10_000)
    assert not session.unlocked


def test_finish_the_step_then_stop_ends_the_node(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    gui.window.settings.finish_button.click()
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.STOPPED, timeout=20_000)
    assert "finishes its current step" in gui.window.settings.message.text()
    assert gui.controller.engine.wait(timeout=10)


def test_upgrade_banner_and_reward_notifications(qtbot, gui) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    engine = gui.controller.engine
    engine.emit(UpgradeAvailable(current_version=1, candidate_version=2, current_parameters=10_000_000,
                                 candidate_parameters=20_000_000))
    qtbot.waitUntil(lambda: gui.window.upgrade_banner.isVisible(), timeout=2_000)
    assert "version 2" in gui.window.upgrade_banner.label.text()
    assert "Model upgrade available" in [title for title, _text in gui.tray.notifications]
    # The node's own proofs (one per 1 s devnet epoch) bring the first rewards summary. How soon the
    # first proof is accepted depends on the machine's load: wait for it (an event), then check the
    # summary it must bring.
    proofs: list[ProofAccepted] = []
    gui.bridge.proof.connect(proofs.append)
    qtbot.waitUntil(lambda: bool(proofs) or gui.bridge.latest("proof") is not None, timeout=180_000)
    qtbot.waitUntil(lambda: any(title == "Rewards earned" for title, _ in gui.tray.notifications), timeout=30_000)


def test_rewards_are_summarised_not_notified_per_proof(qtbot) -> None:  # noqa: ANN001
    bridge = EngineBridge()
    tray = NodeTray(bridge)
    try:
        delivered: list[ProofAccepted] = []
        bridge.proof.connect(delivered.append)
        for epoch in range(3):
            bridge.inject(ProofAccepted(proof_kind="training", epoch=epoch, reward_units=500_000))
        qtbot.waitUntil(lambda: len(delivered) == 3, timeout=30_000)  # all three reached the tray
        rewards = [n for n in tray.notifications if n[0] == "Rewards earned"]
        assert len(rewards) == 1 and "0.5000 NEURO" in rewards[0][1]  # one summary, not one per proof
    finally:
        tray.menu.deleteLater()
        tray.icon.deleteLater()


def test_start_at_login_writes_and_removes_the_autostart_entry(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr("sys.platform", "linux")
    autostart.set_enabled(True)
    entry = tmp_path / "autostart" / autostart.DESKTOP_FILE
    assert autostart.is_enabled() and "Exec=" in entry.read_text() and os.path.exists(entry)
    autostart.set_enabled(False)
    assert not autostart.is_enabled()
