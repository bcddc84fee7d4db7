"""InferenceLimits are the ``[inference]`` section of config.toml, read through the one schema: a
file's values reach the node's config, a bad one is a one-line error naming it, and a changed set
is written back."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from app.node.config import ConfigError, NodeConfig, apply_file_settings, load_config_file, save_config
from app.node.inference_limits import InferenceLimits


def test_the_inference_section_sets_the_limits_and_is_saved(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[inference]\nmax_sessions = 3\nidle_timeout_s = 30.0\n"
                                          "cache_bytes = 8388608\nopenai_endpoint = true\n")
    config = NodeConfig(data_dir=tmp_path)
    config = apply_file_settings(config, load_config_file(config.config_path))
    assert config.inference == InferenceLimits(max_sessions=3, idle_timeout_s=30.0, cache_bytes=8 * 1024 * 1024,
                                               openai_endpoint=True)
    assert not NodeConfig(data_dir=tmp_path).inference.openai_endpoint  # off unless turned on
    save_config(config)
    with (tmp_path / "config.toml").open("rb") as handle:
        assert tomllib.load(handle)["inference"]["max_sessions"] == 3
    assert apply_file_settings(NodeConfig(data_dir=tmp_path), load_config_file(config.config_path)) == config


@pytest.mark.parametrize(("line", "words"), [
    ("max_sessions = 0", "inference: max_sessions must be at least 1, got 0"),
    ("compute_share = 1.5", "inference: compute_share must be at most 1"),
    ("idle_timeout_s = \"long\"", "inference: idle_timeout_s must be a number"),
    ("max_session = 4", "unknown settings in [inference]: max_session (did you mean max_sessions?)"),
])
def test_a_bad_inference_setting_is_one_line_naming_it(tmp_path: Path, line: str, words: str) -> None:
    (tmp_path / "config.toml").write_text(f"[inference]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_config_file(tmp_path / "config.toml")
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)
