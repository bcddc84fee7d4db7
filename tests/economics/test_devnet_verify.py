"""Multi-process devnet on loopback: two verify-mode nodes (staked at genesis) and one lazy node.

Every node is its own process (``main.py`` headless); proofs, verdicts and samples travel over
real gRPC. The lazy node claims a made-up step for every step it ran; the verifiers fetch its
committed steps, re-run them, fail it and referee each other's fails: it ends slashed, and every
honest node is paid for its training with none of its proofs slashed or refused.
"""

from __future__ import annotations

from pathlib import Path

from app.node.devnet import run_devnet
from app.node.economics import replay
from app.node.economics.constants import from_settings
from app.node.economics.report import _records
from app.node.runtime.devnet_funding import devnet_genesis_settings
from app.wallet.keystore import Keystore

ECONOMICS = {"spot_check_rate": 1.0, "spot_check_steps": 8, "challenge_window_ms": 10_000}


def test_devnet_with_verifiers_slashes_the_lazy_node_and_pays_every_honest_one(tmp_path: Path) -> None:
    summary = run_devnet(3, 16, workdir=tmp_path, keep=True, timeout_s=540, verify_nodes=2, lazy_nodes=1,
                         economics_overrides=dict(ECONOMICS), training_overrides={"linger_s": 16.0})
    assert all(code == 0 for code in summary["exit_codes"].values()), summary["errors"]
    dirs = [tmp_path / f"node{i}" for i in range(3)]
    records = {r.record_id: r for d in dirs for r in _records(d / "ledger.sqlite")}
    state = replay.compute_state(records.values(), from_settings({**devnet_genesis_settings(), **ECONOMICS}))
    addresses = [Keystore(d).address for d in dirs]
    lazy, honest = addresses[0], addresses[1:]
    by_author: dict[str, list[str]] = {}
    for record in records.values():
        if record.kind == "proof" and record.body["proof_kind"] == "training":
            by_author.setdefault(record.author_address, []).append(state.statuses[record.record_id][0])
    assert "slashed" in by_author[lazy], by_author[lazy]
    for address in honest:
        assert by_author[address] and all(s == "applied" for s in by_author[address]), by_author[address]
        earned = sum(e.amount for e in state.entries if e.address == address and e.kind == "reward"
                     and e.detail == "training")
        assert earned > 0
    training = summary["proofs"]["training"]
    assert training["slashed"] >= 1 and training["checked"] >= 1
    assert summary["proofs"]["verification"]["accepted"] >= 1, summary["proofs"]


def test_devnet_a_single_griefing_verifier_cannot_slash_an_honest_node(tmp_path: Path) -> None:
    """Node 1 is a verifier that fails every proof it judges with forged evidence; node 2, the
    other verifier, re-runs each failed step and refutes it. Every node's training is paid."""
    summary = run_devnet(3, 16, workdir=tmp_path, keep=True, timeout_s=540, verify_nodes=2, grief_nodes=1,
                         economics_overrides=dict(ECONOMICS), training_overrides={"linger_s": 16.0})
    assert all(code == 0 for code in summary["exit_codes"].values()), summary["errors"]
    dirs = [tmp_path / f"node{i}" for i in range(3)]
    records = {r.record_id: r for d in dirs for r in _records(d / "ledger.sqlite")}
    state = replay.compute_state(records.values(), from_settings({**devnet_genesis_settings(), **ECONOMICS}))
    addresses = [Keystore(d).address for d in dirs]
    griefer = addresses[1]
    forged = [r for r in records.values() if r.kind == "challenge" and r.author_address == griefer
              and r.body["verdict"] == "fail"]
    refuted = [r for r in forged if state.statuses.get(r.body["proof_id"], ("",))[0] == "applied"
               and records[r.body["proof_id"]].author_address == addresses[0]]
    assert refuted, "the griefer failed node 0's proofs"
    assert any(addresses[2] in state.proofs[r.body["proof_id"]].passes for r in refuted)  # refereed, refuted
    for address in addresses:
        statuses = [state.statuses[r.record_id][0] for r in records.values() if r.kind == "proof"
                    and r.body["proof_kind"] == "training" and r.author_address == address]
        assert statuses and all(s == "applied" for s in statuses), (address, statuses)
        earned = sum(e.amount for e in state.entries if e.address == address and e.kind == "reward"
                     and e.detail == "training")
        assert earned > 0
    assert summary["proofs"]["training"]["slashed"] == 0 and summary["proofs"]["training"]["challenged"] >= 1
