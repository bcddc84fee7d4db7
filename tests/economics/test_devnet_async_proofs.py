"""Async mode is paid for pseudo-gradients accepted into an outer step, on a multi-process devnet.

Two pipeline nodes hold the tiny model's two stages; node2 runs async mode: it trains snapshots
offline and sends each stage its part of the pseudo-gradient. Each holder that merged it into an
outer step signs an ``async_receipt`` for the batches and layers it took; the async node's async
proofs claim exactly what those receipts allow and are paid for it. The pipeline nodes, which
contributed no async work, earn nothing for async.
"""

from __future__ import annotations

from pathlib import Path

from app.node.devnet import run_devnet
from app.node.economics import handlers, replay
from app.node.economics.constants import from_settings
from app.node.economics.report import _records
from app.wallet.keystore import Keystore


def test_the_async_node_is_paid_for_what_the_stage_holders_merged_and_only_that(tmp_path: Path) -> None:
    summary = run_devnet(3, 16, workdir=tmp_path, keep=True, timeout_s=480, async_nodes=1, inner_steps=4,
                         training_overrides={"linger_s": 10.0})
    assert all(code == 0 for code in summary["exit_codes"].values()), summary["errors"]
    dirs = [tmp_path / f"node{i}" for i in range(3)]
    addresses = [Keystore(d).address for d in dirs]
    holders, contributor = addresses[:2], addresses[2]
    records = {r.record_id: r for d in dirs for r in _records(d / "ledger.sqlite")}
    state = replay.compute_state(records.values(), from_settings({"preset": "devnet"}))
    receipts = [r for r in records.values() if r.kind == "async_receipt"
                and state.statuses[r.record_id][0] == "applied"]
    assert receipts and {r.author_address for r in receipts} <= set(holders)
    assert all(r.body["contributor"] == contributor for r in receipts)
    proofs = [r for r in records.values() if r.kind == "proof" and r.body["proof_kind"] == "async"]
    assert proofs and all(p.author_address == contributor for p in proofs)
    for proof in proofs:
        assert state.statuses[proof.record_id][0] == "applied", state.statuses[proof.record_id]
        signed = handlers.merged_layer_batches(state, contributor, proof.body["epoch"])
        assert 0 < proof.body["batches"] * proof.body["layers"] <= signed  # only what was merged

    def async_rewards(address: str) -> int:
        return sum(e.amount for e in state.entries if e.address == address and e.kind == "reward"
                   and e.detail == "async")

    assert async_rewards(contributor) > 0
    assert all(async_rewards(h) == 0 for h in holders)
    assert summary["proofs"]["async"]["accepted"] >= 1, summary["proofs"]
