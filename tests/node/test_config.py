import os
import stat
import subprocess
import sys
from pathlib import Path

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
    validate_settings,
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


# --- one schema: every class of config error is one line naming the key, what it got, what it expects

REPO = Path(__file__).resolve().parents[2]

BAD_FILES = {
    "wrong type": ('[node]\nport = "abc"\n', ("node", "port", "'abc'", "integer")),
    "bool as a word": ('[node]\nlisten = "no"\n', ("listen", "'no'", "true or false")),
    "number where a list is expected": ("[node]\ntrackers = 5\n", ("trackers", "5", "list")),
    "string where a list is expected": ('[node]\nmodes = "pipeline"\n', ("modes", "'pipeline'", "list")),
    "limits list": ("[limits]\ngpu_ids = 3\n", ("limits", "gpu_ids", "3", "list")),
    "unknown key": ("[node]\nprot = 7450\n", ("unknown setting", "prot", "[node]", "did you mean port?")),
    "unknown section": ("[nodes]\nport = 7450\n", ("unknown section", "[nodes]", "did you mean node?")),
    "out of range": ("[p2p]\nchunk_bytes = -1\n", ("p2p", "chunk_bytes", "-1", "at least 1")),
    "out of range, nested table": ("[limits.in_use]\ncpu_share = 2.0\n", ("limits.in_use", "cpu_share", "2.0", "at most 1")),
    "bad enum": ('[economics]\npreset = "x"\n', ("economics", "preset", "'x'", "'main' or 'devnet'")),
    "bad enum in training": ('[training]\nmodel = "huge"\n', ("training", "model", "'huge'", "'genesis' or 'tiny'")),
    "bad item": ('[node]\ntrackers = ["localhost"]\n', ("trackers[0]", "'localhost'", "HOST:PORT")),
}


def _settings(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


@pytest.mark.parametrize("text, needles", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_validate_settings_names_key_value_and_expectation_in_one_line(text, needles) -> None:
    with pytest.raises(ConfigError) as info:
        validate_settings(_settings(text))
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_a_misspelt_key_is_matched_only_with_the_keys_of_its_own_table() -> None:
    with pytest.raises(ConfigError) as info:
        validate_settings({"node": {"rpc_timeout_s": 1.0}})  # a [p2p] key
    assert "did you mean" not in str(info.value)
    with pytest.raises(ConfigError, match=r"in \[limits.in_use\]: cpu_shar \(did you mean cpu_share\?\)"):
        validate_settings({"limits": {"in_use": {"cpu_shar": 0.5}}})


def test_a_string_is_never_split_into_characters() -> None:
    with pytest.raises(ConfigError) as info:
        validate_settings({"node": {"modes": "pipeline"}})
    assert "e, i, l" not in str(info.value)


def test_validate_settings_accepts_what_save_config_writes(tmp_path) -> None:
    from app.node.config import UsageCaps, to_toml_dict

    config = NodeConfig(data_dir=tmp_path, trackers=("127.0.0.1:7000",), modes=("pipeline",),
                        limits=ResourceLimits(gpu_ids=(0,), in_use=UsageCaps(cpu_share=0.5)),
                        training={"model": "tiny", "inner_steps": 5}, economics={"preset": "devnet"},
                        p2p={"rpc_timeout_s": 2.0})
    parsed = validate_settings(to_toml_dict(config))
    assert parsed.limits.in_use == UsageCaps(cpu_share=0.5) and parsed.training.inner_steps == 5
    assert parsed.p2p.rpc_timeout_s == 2.0 and parsed.node["modes"] == ("pipeline",)


def test_rule_across_fields_is_one_line_too() -> None:
    with pytest.raises(ConfigError, match="batch_size 6 must be a multiple of micro_batches 4"):
        validate_settings({"training": {"batch_size": 6}})


def test_integers_are_numbers_but_numbers_are_not_integers() -> None:
    assert validate_settings({"training": {"lr": 1}}).training.lr == 1.0
    with pytest.raises(ConfigError, match="batch_size must be an integer, got 8.0"):
        validate_settings({"training": {"batch_size": 8.0}})


def test_section_tables_merge_with_defaults() -> None:
    config = validate_settings({"economics": {"preset": "devnet", "rewards": {"data_per_sample": 20}}})
    assert config.economics["rewards"] == {"data_per_sample": 20}
    from app.node.economics.constants import from_settings

    economics = from_settings(config.economics)
    assert economics.rewards["data_per_sample"] == 20 and economics.epoch_ms == 1000


@pytest.mark.parametrize("text, needles", [*BAD_FILES.values(), (b"[node]\nhost = \"\xff\"\n", ("UTF-8", "0xff"))],
                         ids=[*BAD_FILES.keys(), "invalid UTF-8"])
def test_bad_config_file_exits_2_with_one_line_and_no_traceback(tmp_path, text, needles) -> None:
    path = tmp_path / "config.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    before = path.read_bytes()
    result = subprocess.run([sys.executable, str(REPO / "main.py"), "--headless", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert str(path) in err
    for needle in needles:
        assert needle in err, err
    assert path.read_bytes() == before


def test_invalid_utf8_is_one_line_naming_the_file_and_the_byte(tmp_path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[node]\nhost = "caf\xe9"\n')  # Latin-1, as an old editor might save it
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "UTF-8" in message and "0xe9" in message


def test_load_config_file_names_the_file_for_a_bad_setting(tmp_path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[limits]\ngpu_ids = 3\n")
    with pytest.raises(ConfigError, match=r"config\.toml: limits: gpu_ids must be a list, got 3$"):
        load_config_file(path)


def test_diloco_settings_read_through_the_same_schema_with_the_training_defaults() -> None:
    from app.node.training.config import TrainingConfig
    from app.node.training.diloco import DiLoCoConfig

    assert DiLoCoConfig.from_dict({}).inner_steps == TrainingConfig().inner_steps
    with pytest.raises(ValueError, match="inner_steps must be an integer, got '5'"):
        DiLoCoConfig.from_dict({"inner_steps": "5"})
    with pytest.raises(ValueError, match=r"unknown DiLoCo settings: outer_l \(did you mean outer_lr\?\)"):
        DiLoCoConfig.from_dict({"outer_l": 0.5})
    with pytest.raises(ValueError, match="outer_momentum must be in"):
        DiLoCoConfig.from_dict({"outer_momentum": 1.0})


def test_who_may_connect_is_a_setting_that_decides_where_the_node_listens(tmp_path) -> None:
    from app.node.config import listening

    save_config(NodeConfig(data_dir=tmp_path, reach="home_network"))
    loaded = apply_file_settings(NodeConfig(data_dir=tmp_path), load_config_file(tmp_path / "config.toml"))
    assert loaded.reach == "home_network"
    # a home network: every interface, but the router is not asked to open the port
    assert listening(loaded) == ("0.0.0.0", {"use_upnp": False})
    assert listening(NodeConfig(reach="internet", p2p={"lan_discovery": True})) == ("0.0.0.0", {"lan_discovery": True})
    assert listening(NodeConfig(reach="this_computer", host="0.0.0.0"))[0] == "127.0.0.1"
    assert listening(NodeConfig(reach="internet", host="192.168.1.20"))[0] == "192.168.1.20"  # named interface kept
    assert listening(NodeConfig())[0] == "127.0.0.1"  # a config from before the question: host decides
    with pytest.raises(ConfigError, match="reach"):
        validate_settings({"node": {"reach": "everyone"}})
