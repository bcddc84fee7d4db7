"""A solo genesis node on the devnet economics preset is paid for its training: every proof it
makes is accepted, and after the challenge window its ledger shows settled training rewards.

This runs the real node (engine, trainer, economy) in this process. Its speed tier is pinned to
T4 — the tier whose table bound refused every honest proof before — to show that the tier plays
no part in the bound any more."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from app.crypto.keys import PrivateKey
from app.node import hardware
from app.node.config import NodeConfig
from app.node.economics import ponw
from app.node.economics.constants import from_settings
from app.node.economics.ledger import Ledger
from app.node.economics.records import Record
from app.node.engine import NodeEngine
from app.node.events import Event, ProofAccepted
from app.node.runtime import create_runtime

TRAINING = {"model": "tiny", "batch_size": 4, "micro_batches": 2, "seq_len": 32, "lr": 3e-3,
            "warmup_steps": 0, "inner_steps": 3, "checkpoint_every": 100, "linger_s": 1.5}
ECONOMICS = {"preset": "devnet"}


def _run_solo_node(data_dir: Path, events: list[Event]) -> None:
    report = hardware.HardwareReport(hardware.detect_device("cpu"), 400.0, hardware.tier_for_ms(400.0),
                                     torch.__version__, time.time())
    assert report.tier.value == "T4"
    hardware.save_cache(data_dir, report)
    config = NodeConfig(data_dir=data_dir, port=0, max_steps=6, devnet=True, training=dict(TRAINING),
                        economics=dict(ECONOMICS))
    engine = NodeEngine(config, runtime_factory=create_runtime)
    engine.subscribe(events.append)
    engine.start()
    assert engine.wait(timeout=240) and engine.exit_code == 0


def test_solo_node_ledger_shows_settled_training_rewards_after_the_challenge_window(tmp_path: Path) -> None:
    events: list[Event] = []
    _run_solo_node(tmp_path, events)
    config = from_settings(ECONOMICS)
    ledger = Ledger(tmp_path, config)
    try:
        raws, _ = ledger.records_since(0, 1000)
        proofs = [r for r in map(Record.from_bytes, raws) if r.kind == "proof"]
        training = [p for p in proofs if p.body["proof_kind"] == "training"]
        assert training, "the node trained but made no training proof"
        assert all(p.body["work_root"] for p in training)  # its steps are committed for verifiers
        statuses = {p.record_id: ledger.record_status(p.record_id) for p in proofs}
        assert all(status == "applied" for status, _ in statuses.values()), statuses
        assert {e.proof_kind for e in events if isinstance(e, ProofAccepted)} >= {"training", "uptime"}
        node = training[0].author_address
        # The ledger's clock is its records' timestamps: one later record (a stranger's uptime
        # proof, stamped after every training epoch's window) carries it past the windows.
        last_epoch = max(p.body["epoch"] for p in training)
        later_ms = (last_epoch + 1) * config.epoch_ms + config.challenge_window_ms + 1
        stranger = PrivateKey((777).to_bytes(32, "big"))
        tick = ponw.make_proof(stranger, config, epoch=later_ms // config.epoch_ms, kind="uptime",
                               work=ponw.WorkFigures(uptime_ms=1), timestamp_ms=later_ms)
        assert ledger.submit(tick.to_bytes(), later_ms).accepted
        earned = ledger.earnings(node, by="kind")
        assert earned.get("training", 0) > 0, earned
        assert ledger.balance(node).available >= earned["training"]
    finally:
        ledger.close()
