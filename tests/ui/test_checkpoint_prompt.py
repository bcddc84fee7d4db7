"""Both checkpoint copies corrupt and no peer holds the layers: the app asks, and the answer
reaches the waiting node (the real engine and runtime, solo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.node.events import NodeState
from app.ui.app import GuiApp
from tests.ui.funded_ledger import fast_keystore


def _corrupt_both(data_dir: Path) -> Path:
    checkpoints = data_dir / "checkpoints"
    checkpoints.mkdir()
    newest = checkpoints / "stage.safetensors"
    newest.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    (checkpoints / "stage.safetensors.prev").write_bytes(b"")
    return newest


@pytest.mark.parametrize("answer", ["restart", "stop"])
def test_the_app_asks_and_the_node_follows_the_answer(qtbot, config, wallet_dir, answer: str) -> None:  # noqa: ANN001
    newest = _corrupt_both(config.data_dir)
    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    try:
        prompt = app.checkpoint_prompt
        qtbot.waitUntil(lambda: prompt.dialog is not None and prompt.dialog.isVisible(), timeout=120_000)
        assert "damaged" in prompt.dialog.text()
        assert app.bridge.state != NodeState.TRAINING  # it waits for the answer
        button = prompt.restart_button if answer == "restart" else prompt.stop_button
        button.click()
        if answer == "restart":
            qtbot.waitUntil(lambda: app.bridge.state == NodeState.TRAINING, timeout=120_000)
            assert not newest.with_name(newest.name + ".prev").exists()
            assert list(newest.parent.glob("stage.safetensors.corrupt-*"))  # kept aside, not deleted
        else:
            qtbot.waitUntil(lambda: app.bridge.state in (NodeState.ERROR, NodeState.STOPPED), timeout=120_000)
            assert newest.read_bytes().startswith(b"\x10\x00")  # untouched
    finally:
        app.dispose()
