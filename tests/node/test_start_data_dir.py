"""Which data dir a node starts in: flag > NEUROSHARD_DATA_DIR > folder moved to in Settings > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import build_parser, config_from_args
from app.node.config import remember_data_dir, start_data_dir


@pytest.fixture
def fresh_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("NEUROSHARD_DATA_DIR", raising=False)
    return tmp_path


def test_headless_node_follows_the_folder_moved_to_in_settings(fresh_user: Path) -> None:
    default = start_data_dir(None)
    moved = fresh_user / "big-disk" / "neuroshard"
    moved.mkdir(parents=True)
    remember_data_dir(moved)
    assert start_data_dir(None) == moved != default
    assert config_from_args(build_parser().parse_args(["--headless"])).data_dir == moved


def test_flag_and_environment_win_over_the_remembered_folder(fresh_user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moved = fresh_user / "moved"
    moved.mkdir()
    remember_data_dir(moved)
    assert start_data_dir(fresh_user / "flag") == fresh_user / "flag"
    monkeypatch.setenv("NEUROSHARD_DATA_DIR", str(fresh_user / "env"))
    assert start_data_dir(None) == fresh_user / "env"


def test_a_remembered_folder_that_is_gone_is_not_recreated_empty(fresh_user: Path) -> None:
    default = start_data_dir(None)
    remember_data_dir(fresh_user / "unplugged-disk" / "neuroshard")
    assert start_data_dir(None) == default
    assert not (fresh_user / "unplugged-disk").exists()
