import os
import stat

import pytest

from app.node.config import (
    ConfigError,
    NodeConfig,
    ResourceLimits,
    apply_file_settings,
    ensure_data_dir,
    load_config_file,
    parse_host_port,
    save_config,
)


def test_config_file_round_trip(tmp_path) -> None:
    config = NodeConfig(
        data_dir=tmp_path, port=7999, trackers=("127.0.0.1:7000",), modes=("pipeline", "data"),
        limits=ResourceLimits(memory_fraction=0.3, schedule=((0, 9, 17),), only_when_idle=True),
        training={"model": "tiny"},
    )
    save_config(config)
    loaded = apply_file_settings(NodeConfig(data_dir=tmp_path), load_config_file(config.config_path))
    assert loaded.port == 7999 and loaded.trackers == ("127.0.0.1:7000",)
    assert loaded.modes == ("pipeline", "data")
    assert loaded.limits.schedule == ((0, 9, 17),) and loaded.limits.only_when_idle
    assert loaded.training == {"model": "tiny"}


def test_broken_config_file_is_a_clear_error_and_is_left_alone(tmp_path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[node\nport = ")
    with pytest.raises(ConfigError, match="Fix or delete"):
        load_config_file(path)
    assert path.read_text() == "[node\nport = "


def test_unknown_setting_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        apply_file_settings(NodeConfig(data_dir=tmp_path), {"node": {"prot": 1}})


@pytest.mark.parametrize(
    "change",
    [{"port": 70000}, {"max_steps": -1}, {"modes": ("mining",)}, {"device": "tpu"}, {"trackers": ("nohost",)}],
)
def test_invalid_settings_are_refused(tmp_path, change) -> None:
    with pytest.raises(ConfigError):
        NodeConfig(data_dir=tmp_path, **change).validate()


def test_limits_validate_schedule_and_fractions() -> None:
    with pytest.raises(ConfigError):
        ResourceLimits(memory_fraction=0.99).validate()
    with pytest.raises(ConfigError):
        ResourceLimits(schedule=((7, 0, 24),)).validate()
    ResourceLimits(schedule=((6, 0, 24),)).validate()


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:7450") == ("127.0.0.1", 7450)
    assert parse_host_port("[::1]:80") == ("::1", 80)
    for bad in ("127.0.0.1", ":80", "host:0", "host:99999", "host:x"):
        with pytest.raises(ConfigError):
            parse_host_port(bad)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_data_dir_is_a_clear_error(tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(ConfigError, match="not writable"):
        ensure_data_dir(locked / "node")


def test_data_dir_under_a_file_is_a_clear_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not writable"):
        ensure_data_dir(blocker / "node")
