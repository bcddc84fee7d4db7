"""Data mode is paid from the receiver's signed receipts, on a multi-process devnet on loopback.

node1 starts with the genesis manifest only (``devnet --fetch-data 1``): it fetches every shard
from node0 over gRPC, verifies it and, once it has trained, signs a receipt per epoch for the
samples node0 sent it. node0's data proof claims exactly what node1 signed and is paid for it;
node1 served nothing, signed no receipt for itself, and earns nothing for data.
"""

from __future__ import annotations

from pathlib import Path

from app.node.data.bundled import load_bundled_manifest
from app.node.data.sync import samples_in
from app.node.devnet import run_devnet
from app.node.economics import replay
from app.node.economics.constants import from_settings
from app.node.economics.report import _records
from app.wallet.keystore import Keystore


def test_the_node_that_served_shards_is_paid_from_its_receivers_receipts_and_the_other_earns_nothing(
        tmp_path: Path) -> None:
    summary = run_devnet(2, 16, workdir=tmp_path, keep=True, timeout_s=420, fetch_nodes=1,
                         training_overrides={"linger_s": 8.0})
    assert all(code == 0 for code in summary["exit_codes"].values()), summary["errors"]
    dirs = [tmp_path / f"node{i}" for i in range(2)]
    server, receiver = (Keystore(d).address for d in dirs)
    records = {r.record_id: r for d in dirs for r in _records(d / "ledger.sqlite")}
    state = replay.compute_state(records.values(), from_settings({"preset": "devnet"}))
    receipts = [r for r in records.values() if r.kind == "receipt"]
    applied = [r for r in receipts if state.statuses[r.record_id][0] == "applied"]
    assert applied and all(r.author_address == receiver and r.body["server"] == server for r in receipts)
    corpus = sum(samples_in(s.tokens) for s in load_bundled_manifest().shards)
    assert sum(r.body["samples"] for r in applied) == corpus  # every sample it fetched, signed for once

    def data_rewards(address: str) -> int:
        return sum(e.amount for e in state.entries if e.address == address and e.kind == "reward" and e.detail == "data")

    data_proofs = [r for r in records.values() if r.kind == "proof" and r.body["proof_kind"] == "data"]
    assert data_proofs and all(p.author_address == server for p in data_proofs)
    assert all(state.statuses[p.record_id][0] == "applied" for p in data_proofs), \
        [state.statuses[p.record_id] for p in data_proofs]
    assert data_rewards(server) > 0
    assert data_rewards(receiver) == 0
    assert summary["proofs"]["data"]["accepted"] >= 1, summary["proofs"]
