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


def test_every_planned_step_is_committed_or_lost_with_a_reason_and_dead_nodes_are_listed(tmp_path: Path) -> None:
    dirs = [
        _node(tmp_path, "node0", roles=["driver"], steps=12, loss_first=5.0, loss_last=3.0, tokens=100),
        tmp_path / "node1",  # the killed driver: no run_summary.json
        _node(tmp_path, "node2", roles=["worker"], steps=20),
        _node(tmp_path, "node3", roles=["validator"], steps=20),
    ]
    dirs[1].mkdir()
    seen = {"node0": {"roles": ["driver"], "layers": [0, 2], "last_step": 12, "data_dir": "node0"},
            "node1": {"roles": ["driver"], "layers": [0, 2], "last_step": 7, "data_dir": "node1"},
            "node2": {"roles": ["worker"], "layers": [2, 3], "last_step": 0, "data_dir": "node2"},
            "node3": {"roles": ["validator"], "layers": [3, 4], "last_step": 0, "data_dir": "node3"}}
    s = summarize(dirs, 12, 30.0, killed=["node1"], exit_codes={"node0": 0, "node1": -9, "node2": 0, "node3": 1},
                  errors={}, seen=seen)
    assert s["steps_accounted"] == {"planned": 24, "committed": 19, "lost": 5}
    assert s["committed_steps"] == {"node0": 12, "node1": 7}
    (lost,) = s["lost_steps"]
    assert lost["driver"] == "node1" and lost["steps"] == 5 and "killed after committing step 7 of 12" in lost["reason"]
    assert [(d["node"], d["cause"]) for d in s["dead_nodes"]] == [
        ("node1", "killed by --kill (SIGKILL)"), ("node3", "exited with code 1")]
    assert s["dead_nodes"][0]["roles"] == ["driver"] and s["dead_nodes"][0]["last_step"] == 7


def test_kill_is_refused_for_a_step_the_run_never_reaches() -> None:
    import pytest

    from app.node.devnet import DevnetUsageError

    assert _parse_kill("driver:10", 30) == ("driver", 10)
    with pytest.raises(DevnetUsageError, match="between 1 and 29"):
        _parse_kill("driver:30", 30)
    with pytest.raises(DevnetUsageError, match="ROLE:STEP"):
        _parse_kill("boss:3", 30)


def test_kill_of_a_role_the_run_does_not_have_exits_2_and_kills_nothing(tmp_path: Path) -> None:
    """A real 2-node devnet has drivers and no worker: --kill worker:2 is refused once roles are known."""
    import subprocess
    import sys

    from app.node.devnet import MAIN

    done = subprocess.run([sys.executable, str(MAIN), "devnet", "--nodes", "2", "--steps", "6", "--kill", "worker:2",
                           "--timeout", "240"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "has no worker" in done.stderr and "nothing was killed" in done.stderr


def test_steps_a_live_driver_took_over_count_as_committed_and_the_overlap_as_retrained(tmp_path: Path) -> None:
    dirs = [
        _node(tmp_path, "node0", node_id="aa", roles=["driver"], steps=12, tokens=(12 + 8) * 10,
              taken_over=[{"driver": "bb", "from_step": 4, "steps": 8, "planned": 8}]),
        tmp_path / "node1",  # the killed driver
        _node(tmp_path, "node2", roles=["validator"], steps=20),
    ]
    dirs[1].mkdir()
    seen = {"node0": {"roles": ["driver"], "last_step": 20, "data_dir": "node0", "node_id": "aa", "tokens": 200},
            "node1": {"roles": ["driver"], "last_step": 6, "data_dir": "node1", "node_id": "bb", "tokens": 60},
            "node2": {"roles": ["validator"], "last_step": 0, "data_dir": "node2"}}
    s = summarize(dirs, 12, 30.0, killed=["node1"], exit_codes={"node0": 0, "node1": -9, "node2": 0},
                  errors={}, seen=seen)
    assert s["steps_accounted"] == {"planned": 24, "committed": 24, "lost": 0} and s["lost_steps"] == []
    assert s["taken_over"] == [{"driver": "node1", "by": "node0", "from_step": 4, "steps": 8}]
    assert [(r["driver"], r["steps"], r["by"]) for r in s["retrained_steps"]] == [("node1", 2, "node0")]
    assert s["tokens"] == 200 + 60  # the survivor's (its plan and the one it took over) and the dead one's
    assert [d["node"] for d in s["dead_nodes"]] == ["node1"]
    # a takeover cut short: the rest is lost, and the reason says who trained how much
    short = dict(json.loads((dirs[0] / "run_summary.json").read_text()),
                 taken_over=[{"driver": "bb", "from_step": 4, "steps": 5, "planned": 8}])
    (dirs[0] / "run_summary.json").write_text(json.dumps(short))
    s = summarize(dirs, 12, 30.0, killed=["node1"], exit_codes={"node0": 0, "node1": -9, "node2": 0},
                  errors={}, seen=seen)
    assert s["steps_accounted"] == {"planned": 24, "committed": 21, "lost": 3}
    assert "trained only 3 of them" in s["lost_steps"][0]["reason"]


def test_a_devnet_that_fails_keeps_the_logs_its_error_points_to() -> None:
    """A run that times out says "logs in <dir>": that temporary dir is kept, not removed with the
    rest (a 3-node devnet that timed out under load once left nothing to read)."""
    import re

    import pytest

    from app.node.devnet import DevnetError, run_devnet

    with pytest.raises(DevnetError, match="logs in") as failed:
        run_devnet(1, 1000, timeout_s=0.5)
    workdir = Path(re.search(r"logs in (\S+)", str(failed.value)).group(1))
    try:
        assert workdir.is_dir() and (workdir / "node0.log").exists()
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
