"""A 2-replica devnet with one poisoned replica keeps held-out loss within 2 % of the clean run.

Two node processes on loopback each hold the whole tiny model (two replicas of one stage) and
meet every ``inner_steps`` in a DiLoCo round over gRPC. In the poisoned run node0 sends a
poisoned pseudo-gradient every round (``devnet --poison 1``, app/node/devnet_poison.py); both
nodes score each contribution on held-out genesis tokens before merging and leave the poisoned
one out. The honest node's final weights, measured on evaluation windows nobody trains or screens
with, must not be more than 2 % worse than the clean run's. Only "worse" is bounded: merging one
honest pseudo-gradient instead of two can also leave the loss lower, which is no harm. Without
scoring the poisoned rounds raise it by far more (+260 % in tests/training/test_poisoned_replica.py).

The comparison is exact, not a matter of timing: a devnet's node ids are the same in every run
(runtime/devnet_funding.py ``devnet_node_key``, so the same data orders and merge order), its
drivers start once every replica has announced its stage, and a round waits for a replica whose
driver is about to train in it (runtime/p2p_transport.py), so every round of both runs weighs both
replicas and the runs end on the same weights every time (bit for bit: 3.6491 clean, 3.6707
poisoned, +0.6 %). Before, round timing decided which replica closed which round alone and moved
either run by several per cent (the margin failed 1 of 3 loaded runs). The runs are short (9
steps, 3 rounds of 3) because what a second honest replica adds grows with training: it is the
cost of losing the poisoned replica's work, not damage done by its poison.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.node.devnet import run_devnet
from app.node.devnet_poison import held_out_loss

STEPS, INNER = 9, 3  # three outer rounds; the last step closes one, so the final weights are merged ones
TRAINING = {"max_layers_per_node": 0, "linger_s": 4.0}


def _run(workdir: Path, poison: int) -> dict:
    summary = run_devnet(2, STEPS, workdir=workdir, keep=True, inner_steps=INNER, timeout_s=420,
                         poison_nodes=poison, training_overrides=dict(TRAINING))
    assert all(code == 0 for code in summary["exit_codes"].values()), summary["errors"]
    assert all(node["layers"] == [0, 4] for node in summary["layer_assignment"].values()), summary["layer_assignment"]
    return summary


def _node(workdir: Path, node: str) -> dict:
    return json.loads((workdir / node / "run_summary.json").read_text())


def test_one_poisoned_replica_of_two_keeps_the_honest_ones_held_out_loss_within_2_percent(tmp_path: Path) -> None:
    clean_dir, poisoned_dir = tmp_path / "clean", tmp_path / "poisoned"
    _run(clean_dir, poison=0)
    _run(poisoned_dir, poison=1)
    clean_nodes = [_node(clean_dir, f"node{i}") for i in range(2)]
    poisoned_nodes = [_node(poisoned_dir, f"node{i}") for i in range(2)]
    clean_node, honest = clean_nodes[1], poisoned_nodes[1]
    # The two runs are the same run but for the poison: the same node ids (so the same data orders
    # and merge order), and every round of both weighed both replicas' pseudo-gradients (a round
    # closed with one member would leave the comparison to timing).
    assert [n["node_id"] for n in clean_nodes] == [n["node_id"] for n in poisoned_nodes]
    for node in clean_nodes + poisoned_nodes:
        assert node["steps"] == STEPS and node["round_contributions"] == [2] * (STEPS // INNER), node
    assert clean_nodes[0]["layer_hashes"] == clean_nodes[1]["layer_hashes"]  # the clean replicas agree
    assert clean_node["rejected_contributions"] == 0
    assert honest["rejected_contributions"] == STEPS // INNER  # the poisoned one, every round
    clean = held_out_loss(clean_dir / "node1")
    poisoned = held_out_loss(poisoned_dir / "node1")
    assert poisoned <= clean * 1.02, (clean, poisoned)
