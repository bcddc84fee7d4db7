"""The devnet's summary line, built from the nodes' run_summary.json files."""

from __future__ import annotations

import json
from pathlib import Path

from app.node.devnet import _parse_kill, devnet_training, summarize
from app.node.training.config import TrainingConfig


def _node(tmp: Path, name: str, **fields: object) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "run_summary.json").write_text(json.dumps(fields))
    return d


def test_summary_aggregates_drivers_bytes_and_per_layer_agreement(tmp_path: Path) -> None:
    dirs = [
        _node(tmp_path, "node0", roles=["driver"], steps=5, loss_first=5.0, loss_last=3.0, tokens=100,
              bytes_sent={"activations": 10, "pseudo_gradients": 4, "dht": 1, "weights": 2}, failovers=1,
              layer_hashes={"0": "a", "embedding": "e"}, quorum={"id": "q1"}),
        _node(tmp_path, "node1", roles=["driver"], steps=5, loss_first=6.0, loss_last=4.0, tokens=100,
              bytes_sent={"activations": 5}, layer_hashes={"0": "b", "embedding": "e"}),
        _node(tmp_path, "node2", roles=["validator"], steps=10, tokens=200, bytes_sent={"activations": 7},
              layer_hashes={"1": "c"}),
        tmp_path / "node3",  # killed before writing anything
    ]
    s = summarize(dirs, 5, 12.0, killed=["node3"], exit_codes={"node3": -9}, errors={})
    assert s["loss_start"] == 5.5 and s["loss_end"] == 3.5
    assert s["tokens"] == 200  # drivers only: a validator's tokens are the same tokens again
    assert s["bytes_sent"] == {"activations": 22, "pseudo_gradients": 4, "other": 3}
    assert s["weights_agree"] == {"0": False, "1": True, "embedding": True}
    assert s["all_weights_agree"] is False and s["failovers"] == 1 and s["quorums"] == [{"id": "q1"}]


def test_devnet_training_settings_are_valid_and_force_a_pipeline() -> None:
    config = TrainingConfig.from_dict(devnet_training(3, 30))
    assert config.model == "tiny" and config.max_layers_per_node == 2 and config.expected_nodes == 3
    assert TrainingConfig.from_dict(devnet_training(1, 5)).max_layers_per_node == 0
    assert _parse_kill("validator:4") == ("validator", 4) and _parse_kill(None) is None
