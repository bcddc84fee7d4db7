"""Moving the data dir from Settings: checked first, copied atomically while the node is stopped,
remembered for the next start, the node restarted there; every failure leaves the old folder in
use and says so in the window. The GUI tests run the real engine and runtime."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from app.cli import build_parser, config_from_args
from app.node import identity
from app.node.config import default_data_dir, remember_data_dir, remembered_data_dir
from app.node.events import NodeState
from app.ui import data_dir_copy
from app.ui.data_dir_copy import MoveCancelled, MoveError, check_target, copy_data_dir
from tests.ui.funded_ledger import PASSWORD, STAKE_UNITS, fast_keystore
from tests.ui.helpers import economy, wait_training


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(data_dir_copy.TEMP_PREFIX)]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "old"
    (src / "checkpoints").mkdir(parents=True)
    (src / "config.toml").write_text("[node]\nport = 7450\n")
    (src / "keystore.json").write_bytes(b"sealed key")
    os.chmod(src / "keystore.json", 0o600)
    (src / "checkpoints" / "stage.safetensors").write_bytes(os.urandom(3 * data_dir_copy.CHUNK + 17))
    return src


def test_a_copy_is_complete_identical_and_keeps_file_modes(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "new"
    seen: list[tuple[int, int]] = []
    copy_data_dir(source, target, lambda done, total: seen.append((done, total)))
    assert tree(target) == tree(source)
    assert (target / "keystore.json").stat().st_mode & 0o777 == 0o600
    assert seen[-1][0] == seen[-1][1] == sum((source / f).stat().st_size for f in tree(source))
    assert leftovers(tmp_path) == []


def test_a_cancelled_or_failed_copy_leaves_nothing_behind(source: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "new"
    cancel = threading.Event()

    def cancel_midway(done: int, total: int) -> None:
        if done > data_dir_copy.CHUNK:
            cancel.set()

    with pytest.raises(MoveCancelled):
        copy_data_dir(source, target, cancel_midway, cancel)
    assert not target.exists() and leftovers(tmp_path) == []

    real_copy = data_dir_copy._copy_file
    calls: list[Path] = []

    def disk_full_after_first_file(src: Path, dst: Path, *args: object) -> tuple[int, str]:
        calls.append(src)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst, *args)

    monkeypatch.setattr(data_dir_copy, "_copy_file", disk_full_after_first_file)
    with pytest.raises(MoveError, match="disk is full"):
        copy_data_dir(source, target)
    assert not target.exists() and leftovers(tmp_path) == []
    assert tree(source)  # the source is only read


def test_targets_are_checked_before_anything_stops(source: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(MoveError, match="is a file"):
        check_target(source, a_file)
    with pytest.raises(MoveError, match="inside the current data folder"):
        check_target(source, source / "sub")
    with pytest.raises(MoveError, match="already the data folder"):
        check_target(source, source)
    busy = tmp_path / "photos"
    busy.mkdir()
    (busy / "cat.jpg").write_bytes(b"\xff")
    with pytest.raises(MoveError, match="not empty"):
        check_target(source, busy)
    with pytest.raises(MoveError, match="does not exist"):
        check_target(source, tmp_path / "no" / "such" / "parent")
    other_node = tmp_path / "other-node"
    other_node.mkdir()
    (other_node / "ledger.sqlite").write_bytes(b"")
    assert check_target(source, other_node).existing
    empty = tmp_path / "empty"
    empty.mkdir()
    checked = check_target(source, empty)
    assert not checked.existing and checked.needed_bytes > 3 * data_dir_copy.CHUNK

    def refused(*_args: object, **_kwargs: object) -> None:  # what a folder we may not write to answers
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as patch:  # root (CI containers) may write anywhere: the refusal is simulated
        patch.setattr(data_dir_copy.tempfile, "mkstemp", refused)
        with pytest.raises(MoveError, match="cannot write in .*permission denied"):
            check_target(source, tmp_path / "new")

    class Usage:
        free = 1024

    monkeypatch.setattr(data_dir_copy.shutil, "disk_usage", lambda _path: Usage())
    with pytest.raises(MoveError, match="not enough free space"):
        check_target(source, tmp_path / "new")


def test_the_remembered_folder_is_used_at_the_next_start_unless_one_was_chosen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("NEUROSHARD_DATA_DIR", raising=False)
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "config.toml").write_text("[node]\nport = 7555\n")
    plain = config_from_args(build_parser().parse_args([]))
    assert remembered_data_dir() is None and plain.data_dir == default_data_dir()
    remember_data_dir(moved)
    assert remembered_data_dir() == moved
    started = config_from_args(build_parser().parse_args([]))
    assert started.data_dir == moved and started.port == 7555  # the settings saved in the new folder
    flagged = config_from_args(build_parser().parse_args(["--data-dir", str(tmp_path / "from-the-command-line")]))
    assert flagged.data_dir == tmp_path / "from-the-command-line"  # --data-dir wins
    monkeypatch.setenv("NEUROSHARD_DATA_DIR", str(tmp_path / "from-env"))
    from_env = config_from_args(build_parser().parse_args([]))
    assert from_env.data_dir == tmp_path / "from-env"  # and so does NEUROSHARD_DATA_DIR


def wait_restarted(qtbot, gui, previous) -> None:  # noqa: ANN001
    """A new engine (not ``previous``) is training; the bridge may still show the old one's state."""
    qtbot.waitUntil(lambda: gui.controller.engine not in (None, previous)
                    and gui.controller.engine.state == NodeState.TRAINING, timeout=60_000)
    qtbot.waitUntil(lambda: gui.bridge.state == NodeState.TRAINING, timeout=10_000)


def unlock_again(qtbot, gui) -> None:  # noqa: ANN001
    """The wallet is password-protected: the app asks for it again in the new folder."""
    qtbot.waitUntil(lambda: gui.unlock.dialog is not None and gui.unlock.dialog.isVisible(), timeout=20_000)
    gui.unlock.dialog.password.setText(PASSWORD)
    assert gui.unlock.dialog.try_accept()


def test_moving_the_data_dir_keeps_wallet_ledger_and_checkpoints(qtbot, gui, tmp_path: Path) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    old = gui.config.data_dir
    address = economy(gui).session.wallet.address
    qtbot.waitUntil(lambda: gui.bridge.latest("step") is not None, timeout=20_000)
    page = gui.window.settings
    target = tmp_path / "moved" / "NeuroShard"
    target.parent.mkdir()
    first_engine = gui.controller.engine
    progress: list[tuple[int, int]] = []
    gui.mover.progress.connect(lambda done, total: progress.append((done, total)))
    assert page.change_data_dir(target)
    assert not page.change_dir_button.isEnabled() and page.move_progress.isVisibleTo(page)
    try:
        unlock_again(qtbot, gui)
        wait_restarted(qtbot, gui, first_engine)
        assert gui.controller.engine.config.data_dir == target
        assert "now keeps its data in" in gui.window.message_bar.text() and "can delete it" in page.message.text()
        assert page.data_dir_label.text() == str(target) and page.change_dir_button.isEnabled()
        assert progress[0][0] == 0 and progress[-1][0] == progress[-1][1] > 0  # shown from 0 to all bytes
        assert not page.move_progress.isVisibleTo(page)
        assert remembered_data_dir() == target
        assert set(tree(old)) <= set(tree(target))  # everything came along; the old folder stays
        assert (target / "checkpoints").is_dir() and (target / "ledger.sqlite").is_file()
        assert fast_keystore(target).address == address
        # the restarted node reads the copied ledger: the genesis grant and the stake are there
        assert economy(gui).session.wallet.address == address
        assert economy(gui).ledger.balance(address).staked == STAKE_UNITS
        assert leftovers(target.parent) == []
    finally:
        identity.forget_password(target)


def test_failed_moves_keep_the_old_folder_in_use_and_say_why(qtbot, gui, tmp_path: Path,  # noqa: ANN001
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    wait_training(qtbot, gui)
    old = gui.config.data_dir
    page, bar = gui.window.settings, gui.window.message_bar
    engine = gui.controller.engine
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    assert not page.change_data_dir(a_file)
    assert "is a file" in page.message.text() and gui.controller.engine is engine  # nothing stopped

    # Cancel while the node is stopping: nothing is copied and the node starts again where it was.
    target = tmp_path / "target"
    assert page.change_data_dir(target)
    page.cancel_move_button.click()
    qtbot.waitUntil(lambda: "cancelled" in bar.text(), timeout=30_000)
    wait_restarted(qtbot, gui, engine)
    assert gui.controller.engine.config.data_dir == old
    assert not target.exists() and remembered_data_dir() is None

    # The disk fills up during the copy.
    def disk_full(*_args: object) -> tuple[int, str]:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data_dir_copy, "_copy_file", disk_full)
    engine = gui.controller.engine
    assert page.change_data_dir(target)
    qtbot.waitUntil(lambda: "disk is full" in bar.text(), timeout=30_000)
    assert bar.level == "error" and "was not changed" in bar.text() and str(old) in bar.text()
    wait_restarted(qtbot, gui, engine)
    assert gui.controller.engine.config.data_dir == old
    assert gui.config.data_dir == old and page.data_dir_label.text() == str(old)
    assert not target.exists() and leftovers(tmp_path) == [] and remembered_data_dir() is None
    assert gui.bridge.state == NodeState.TRAINING and page.change_dir_button.isEnabled()


def test_a_folder_with_another_nodes_data_is_offered_as_is(qtbot, gui, tmp_path: Path) -> None:  # noqa: ANN001
    wait_training(qtbot, gui)
    old = gui.config.data_dir
    other = tmp_path / "other-node"
    other.mkdir()
    other_address = fast_keystore(other).create(PASSWORD).address
    page = gui.window.settings
    engine = gui.controller.engine
    assert page.change_data_dir(other)
    qtbot.waitUntil(lambda: page.existing_prompt is not None and page.existing_prompt.isVisible(), timeout=5_000)
    assert "already holds" in page.existing_prompt.text()
    page.existing_prompt.reject()
    assert gui.controller.engine is engine and "not changed" in page.message.text()
    assert not (other / "ledger.sqlite").exists()  # nothing was copied over it

    assert page.change_data_dir(other)
    qtbot.waitUntil(lambda: page.existing_prompt.isVisible(), timeout=5_000)
    use = next(b for b in page.existing_prompt.buttons() if b.text() == "Use it as is")
    use.click()
    try:
        unlock_again(qtbot, gui)
        wait_restarted(qtbot, gui, engine)
        assert gui.controller.engine.config.data_dir == other and remembered_data_dir() == other
        assert economy(gui).session.wallet.address == other_address  # that folder's own wallet, as it was
        assert economy(gui).ledger.totals()["staked"] == 0  # its own ledger: none of the old one's records
        assert (old / "ledger.sqlite").is_file()  # and the old folder is left as it was
    finally:
        identity.forget_password(other)
