"""Issue 16's devnet: the network grows its model mid-run and keeps what it learned.

Four node processes on loopback (two stages, two replicas each) train the tiny model; at driver
step 8 the recalculation is forced (``--upgrade-at``), a driver publishes the signed upgrade
(4 × 64 -> 6 × 64, two identity blocks, the devnet's growth cap) and every node stops, migrates
the layers it holds (backup, function-preserving growth, adoption), restarts on version 2 and
trains on. The summary's figures come from the nodes' data dirs (app/node/devnet_upgrade.py).

Marked slow: the run restarts every node once, 90-140 s on a loaded 2-core machine.
"""

from __future__ import annotations

import pytest

from app.node.devnet import run_devnet

STEPS, UPGRADE_AT = 24, 8


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_upgrade_triggers_every_node_migrates_the_loss_is_kept_and_training_goes_on() -> None:
    summary = run_devnet(4, STEPS, inner_steps=4, timeout_s=500, upgrade_at=UPGRADE_AT)
    assert all(code == 0 for code in summary["exit_codes"].values()), summary["errors"]
    upgrade = summary["upgrade"]
    assert upgrade["triggered"] and upgrade["all_migrated"], upgrade
    assert (upgrade["version_before"], upgrade["version_after"]) == (1, 2)
    assert upgrade["shape_before"] == [4, 64] and upgrade["shape_after"] == [6, 64]
    assert upgrade["parameters_after"] >= 1.3 * upgrade["parameters_before"]
    assert upgrade["decided_at_nodes"] == 4
    # every node grew its own layers: the stages tile the new model, the inserted blocks on one of them
    assert upgrade["stages_before"] == [[0, 2], [2, 4]] and upgrade["stages_after"] == [[0, 2], [2, 6]]
    assert upgrade["grown_weights_are_what_nodes_adopted"], upgrade
    before, after = upgrade["held_out_loss_before"], upgrade["held_out_loss_after"]
    assert abs(after - before) <= 1e-4 * before, upgrade
    assert upgrade["held_out_loss_end"] < after, upgrade  # training went on, on version 2, and learned
    # no planned step lost across the restart, and the drivers trained after migrating
    assert not summary["lost_steps"], summary["lost_steps"]
    assert summary["steps_accounted"]["committed"] == 2 * STEPS, summary["steps_accounted"]
    assert all(0 < steps < STEPS for steps in summary["driver_steps"].values()), summary["driver_steps"]
    assert summary["all_weights_agree"], summary["weights_agree"]
    assert sorted(summary["weights_agree"]) == ["0", "1", "2", "3", "4", "5", "embedding", "head"]
