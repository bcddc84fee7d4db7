"""The architecture scaler, its presets and the upgrade rule."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.node.model.architecture import (
    BYTES_PER_TRAINED_PARAM,
    GIB,
    ModelArchitecture,
    calculate_optimal_architecture,
    parameter_budget,
    should_upgrade,
)
from app.node.model.cli import describe, table


def test_genesis_is_anchored_at_11_layers_of_512() -> None:
    arch = ModelArchitecture.genesis()
    assert (arch.layers, arch.hidden, arch.vocab) == (11, 512, 266)
    assert arch == calculate_optimal_architecture(2 * GIB, nodes=1)


@given(st.floats(min_value=0.5, max_value=1e6), st.floats(min_value=1.01, max_value=100))
def test_scaler_is_monotone_in_memory(gib: float, factor: float) -> None:
    small = calculate_optimal_architecture(int(gib * GIB), nodes=4)
    big = calculate_optimal_architecture(int(gib * factor * GIB), nodes=4)
    assert big.hidden >= small.hidden and big.layers >= small.layers
    assert big.param_count() >= small.param_count()


def test_width_grows_faster_than_depth() -> None:
    small = calculate_optimal_architecture(10 * 8 * GIB, nodes=10)
    big = calculate_optimal_architecture(10000 * 8 * GIB, nodes=10000)
    width_growth = math.log(big.hidden / small.hidden)
    depth_growth = math.log(big.layers / small.layers)
    assert width_growth > 1.3 * depth_growth


@pytest.mark.parametrize("nodes", [1, 10, 100, 1000, 10000])
def test_parameter_count_tracks_the_memory_budget(nodes: int) -> None:
    total = nodes * 8 * GIB
    arch = calculate_optimal_architecture(total, nodes=nodes)
    ratio = arch.param_count() / parameter_budget(total, nodes)
    assert 0.6 < ratio < 1.25, ratio
    assert arch.hidden % arch.head_dim == 0 and arch.ffn % 256 == 0
    assert arch.heads % arch.kv_heads == 0


def test_replication_halves_the_budget_once_there_are_two_nodes() -> None:
    assert parameter_budget(16 * GIB, nodes=2) == pytest.approx(parameter_budget(16 * GIB, nodes=1) / 2)


def test_should_upgrade_needs_thirty_percent_more_parameters() -> None:
    base = ModelArchitecture.genesis()
    slightly = base.with_changes(layers=13)  # ~1.18x
    clearly = base.with_changes(layers=15)  # ~1.36x
    assert not should_upgrade(base, slightly)
    assert should_upgrade(base, clearly)
    assert not should_upgrade(clearly, base)
    assert should_upgrade(base, slightly, min_improvement=1.1)


def test_train_bytes_per_layer_uses_bytes_per_trained_param() -> None:
    arch = ModelArchitecture.tiny()
    assert arch.train_bytes_per_layer() == arch.layer_param_count() * BYTES_PER_TRAINED_PARAM


def test_dict_round_trip_and_json_safety() -> None:
    arch = ModelArchitecture.genesis().with_changes(version=3, tie_embeddings=True)
    assert ModelArchitecture.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch


@pytest.mark.parametrize(("patch", "reason"), [
    ({"hidden": 100}, "must equal hidden"),
    ({"kv_heads": 3}, "multiple of kv_heads"),
    ({"layers": 0}, "positive integer"),
    ({"layers": "4"}, "must be an integer"),
    ({"tie_embeddings": 1}, "must be a bool"),
    ({"bogus": 1}, "unknown architecture fields"),
    ({"norm_eps": float("nan")}, "finite number"),
])
def test_from_dict_rejects_bad_input_with_reason(patch: dict[str, object], reason: str) -> None:
    d = ModelArchitecture.tiny().to_dict() | patch
    with pytest.raises(ValueError, match=reason):
        ModelArchitecture.from_dict(d)


def test_from_dict_reports_missing_field() -> None:
    d = ModelArchitecture.tiny().to_dict()
    del d["heads"]
    with pytest.raises(ValueError, match="'heads' is missing"):
        ModelArchitecture.from_dict(d)
    with pytest.raises(ValueError, match="mapping"):
        ModelArchitecture.from_dict([1, 2])


def test_cli_describe_and_table() -> None:
    d = describe(1, 2.0)
    assert d["architecture"]["layers"] == 11  # type: ignore[index]
    rows = table(8.0).splitlines()
    assert len(rows) == 7 and rows[2].startswith("| 1 |") and rows[-1].startswith("| 10000 |")


def test_arch_command_prints_json_without_importing_torch() -> None:
    root = Path(__file__).resolve().parents[2]
    code = ("import sys, json; from app.node.model import cli; import argparse; p = argparse.ArgumentParser();"
            "cli.add_arguments(p); cli.run(p.parse_args(['--nodes', '10', '--memory-gb-per-node', '8']));"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         timeout=60).stdout
    body, torch_loaded = out.rsplit("\n", 2)[0], out.strip().splitlines()[-1]
    assert json.loads(body)["architecture"]["hidden"] == 1536
    assert torch_loaded == "False"


def test_every_scaled_architecture_is_reachable_from_genesis_by_growth() -> None:
    """Width growth keeps head size and query-group size; the scaler never changes either."""
    archs = [ModelArchitecture.genesis()] + [calculate_optimal_architecture(n * 8 * GIB, nodes=n)
                                             for n in (1, 10, 50, 100, 1000, 10000)]
    for small, big in zip(archs, archs[1:], strict=False):
        assert big.head_dim == small.head_dim
        assert big.heads // big.kv_heads == small.heads // small.kv_heads
        assert (big.hidden, big.ffn, big.layers) >= (small.hidden, small.ffn, small.layers)
        assert big.ffn >= small.ffn and big.layers >= small.layers
