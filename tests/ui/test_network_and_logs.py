"""Network page, Logs view and diagnostics export against a real engine."""

from __future__ import annotations

import zipfile

from app.node.events import LogLine, NetworkChanged, PeerJoined, PeerLeft
from app.ui import plain_words
from tests.ui.helpers import wait_training


def test_network_page_shows_reachability_phase_coverage_and_peers(qtbot, shared_gui) -> None:  # noqa: ANN001
    wait_training(qtbot, shared_gui)
    page = shared_gui.window.network
    layers = shared_gui.bridge.latest("layers")
    assert page.arch_label.text().startswith(f"version {layers.architecture_version}: {layers.total_layers} layers")
    qtbot.waitUntil(lambda: "training step" in page.activity_label.text(), timeout=5_000)
    network = shared_gui.bridge.latest("network")
    if network is not None:  # the solo genesis node reports its network once it is up
        assert page.phase_label.text().lower().startswith(plain_words.PHASE_WORDS[network.phase][:12].lower())
        assert network.phase in page.phase_label.toolTip()  # the term itself, for those who know it
        assert page.coverage.replicas == network.replicas_per_layer
    qtbot.waitUntil(lambda: page.peers_loaded, timeout=5_000)  # the node's own snapshot came first
    engine = shared_gui.controller.engine
    engine.emit(PeerJoined(node_id="ab" * 16, address="127.0.0.1:7461", tier="T3", layers=(0, 2), latency_ms=12.0))
    engine.emit(NetworkChanged(reachable=False, relay="127.0.0.1:7999", peers=1, phase="micro",
                               replicas_per_layer=(2, 2)))
    qtbot.waitUntil(lambda: page.table.rowCount() == 1, timeout=2_000)
    assert page.table.item(0, 2).text() == "T3" and page.table.item(0, 4).text() == "12 ms"
    assert "127.0.0.1:7999" in page.reach_label.text() and "relay" in page.reach_label.toolTip().lower()
    assert page.phase_label.text().startswith("A few computers") and "micro" in page.phase_label.toolTip()
    engine.emit(PeerLeft(node_id="ab" * 16))
    qtbot.waitUntil(lambda: page.table.rowCount() == 0, timeout=2_000)
    page.retest()  # the real runtime re-runs its self-test: it listens on 127.0.0.1 only
    assert page.reach_label.text() == "Testing…"
    qtbot.waitUntil(lambda: page.retest_button.isEnabled() and page.reach_label.text() != "Testing…", timeout=15_000)
    assert page.reach_label.text() == plain_words.reachability("this_computer").words
    assert shared_gui.bridge.latest("reachability").verdict == "this_computer"


def test_logs_search_and_diagnostics_leave_secrets_out(qtbot, shared_gui, tmp_path) -> None:  # noqa: ANN001
    wait_training(qtbot, shared_gui)
    page = shared_gui.window.logs
    engine = shared_gui.controller.engine
    engine.emit(LogLine(level="INFO", message="joined quorum q-1"))
    engine.emit(LogLine(level="WARNING", message="unlock failed: password=hunter2hunter2"))
    engine.emit(LogLine(level="DEBUG", message="key " + "ab" * 32))
    qtbot.waitUntil(lambda: "joined quorum q-1" in page.visible_text(), timeout=2_000)
    page.search.setText("quorum q-1")
    assert page.visible_text().strip().endswith("joined quorum q-1")
    assert "state training" not in page.visible_text()
    page.search.setText("")
    page.level.setCurrentText("WARNING")
    assert "joined quorum" not in page.visible_text() and "unlock failed" in page.visible_text()
    out = tmp_path / "diag.zip"
    page.export(out)
    qtbot.waitUntil(lambda: "written" in page.message.text(), timeout=10_000)
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        text = "\n".join(archive.read(name).decode() for name in names)
    assert {"versions.txt", "config.toml", "hardware.json", "app-log.txt", "node-log-tail.txt"} <= names
    assert "joined quorum q-1" in text and "state training" in text
    assert "hunter2" not in text and "ab" * 32 not in text
    assert "keystore" not in " ".join(names)
    page.export(tmp_path / "no-such-dir" / "diag.zip")
    qtbot.waitUntil(lambda: "Could not write" in page.message.text(), timeout=10_000)
