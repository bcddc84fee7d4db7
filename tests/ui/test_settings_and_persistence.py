"""Settings persist to config.toml and ui.ini; window geometry survives a restart; bad input and a
full disk give a message and change nothing."""

from __future__ import annotations

import errno

from app.node.config import apply_file_settings, load_config_file
from app.ui.app import GuiApp
from tests.ui.funded_ledger import fast_keystore
from tests.ui.helpers import wait_training


def test_settings_and_geometry_persist_across_restarts(qtbot, gui, config) -> None:  # noqa: ANN001
    page = gui.window.settings
    page.port.setValue(7555)
    page.trackers.setPlainText("127.0.0.1:9001\n127.0.0.1:9002")
    page.limits.memory.setValue(30)
    page.limits.only_idle.setChecked(True)
    page.limits.idle_minutes.setValue(12)
    page.limits.programs.setText("blender, steam")
    page.limits.gpu_ids.setText("0,1")
    page.limits.schedule.rows[5][0].setChecked(True)
    page.limits.schedule.rows[5][1].setValue(9)
    page.limits.schedule.rows[5][2].setValue(17)
    page.theme.setCurrentText("dark")
    page.close_to_tray.setChecked(False)
    page.lock_minutes.setValue(3)
    assert page.lan_discovery.isChecked()  # on by default
    page.lan_discovery.setChecked(False)
    # a config from before the question: where it listens is shown and kept until an answer is picked
    assert page.reach.currentData() is None and "127.0.0.1" in page.reach.currentText()
    assert "firewall" in page.reach_note.text()
    page.reach.setCurrentIndex(page.reach.findData("home_network"))  # saved only: this node is not restarted
    assert page.save(), page.message.text()
    gui.window.resize(760, 700)
    gui.window.move(30, 40)
    saved_geometry = gui.window.geometry()
    gui.window.show_page(4)
    gui.window.save_state()
    gui.controller.stop()

    reloaded = apply_file_settings(config, load_config_file(config.config_path))
    assert reloaded.port == 7555 and reloaded.trackers == ("127.0.0.1:9001", "127.0.0.1:9002")
    limits = reloaded.limits
    assert limits.memory_fraction == 0.3 and limits.only_when_idle and limits.idle_minutes == 12
    assert limits.pause_when_running == ("blender", "steam") and limits.gpu_ids == (0, 1)
    assert limits.schedule == ((5, 9, 17),)
    assert reloaded.p2p["lan_discovery"] is False
    assert reloaded.reach == "home_network"
    again = GuiApp(reloaded, keystore_factory=fast_keystore)
    assert again.ui.theme == "dark" and not again.ui.close_to_tray and again.ui.wallet_lock_minutes == 3
    assert again.qapp.property("neuroshard_theme") == "dark"
    assert again.window.geometry() == saved_geometry
    assert again.window.stack.currentIndex() == 4
    assert again.window.settings.port.value() == 7555
    assert again.window.settings.limits.memory.value() == 30
    assert not again.window.settings.lan_discovery.isChecked()
    reach = again.window.settings.reach
    assert reach.currentData() == "home_network" and reach.findData(None) < 0  # answered: no "as the file says"
    again.dispose()


def test_bad_values_and_a_full_disk_are_reported_and_change_nothing(qtbot, gui, monkeypatch) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    page = gui.window.settings
    before = page.config.config_path.read_bytes() if page.config.config_path.exists() else b""
    page.trackers.setPlainText("not-a-tracker")
    assert not page.save()
    assert "not HOST:PORT" in page.message.text()
    page.trackers.setPlainText("")
    page.limits.gpu_ids.setText("first")
    assert not page.save() and "GPUs" in page.message.text()
    page.limits.gpu_ids.setText("")

    def disk_full(_config: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("app.ui.pages.settings.save_config", disk_full)
    assert not page.save()
    assert "No space left on device" in page.message.text() and "unchanged" in page.message.text()
    current = page.config.config_path.read_bytes() if page.config.config_path.exists() else b""
    assert current == before
    assert gui.bridge.state.value == "training"  # the node kept running throughout
