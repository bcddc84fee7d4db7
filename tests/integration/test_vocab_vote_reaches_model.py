"""A vocabulary vote that passed in the node's own ledger reaches the model it trains.

End to end on the real runtime, nothing replaced: the ledger holds a genesis grant, a stake, a
proposal and a yes vote (signed records, backdated so the proposal is implemented by the time
the node starts); the solo genesis node reads its ledger, grows its tokenizer, data stream and
embedding/head at the first DiLoCo round boundary, keeps training, checkpoints the grown model
and resumes from it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from app.crypto.keys import PrivateKey
from app.node import hardware
from app.node.config import NodeConfig
from app.node.economics.constants import from_settings, neuro
from app.node.economics.genesis import genesis_record
from app.node.economics.ledger import Ledger
from app.node.economics.records import Record
from app.node.engine import NodeEngine
from app.node.events import Event, VocabularyChanged
from app.node.runtime import create_runtime
from app.node.runtime.node_runtime import NodeRuntime
from app.node.training.checkpointing import read_resume_point

GENESIS_KEY = PrivateKey((5151).to_bytes(32, "big"))
VOTER_KEY = PrivateKey((5252).to_bytes(32, "big"))
ECONOMICS = {"preset": "devnet", "genesis_public_key": GENESIS_KEY.public_key.data.hex(),
             "discussion_ms": 200, "voting_ms": 1500, "implementation_ms": 300}
MERGES = [("74", "68"), ("7468", "65")]  # t+h, th+e: two new tokens
TRAINING = {"model": "tiny", "batch_size": 4, "micro_batches": 2, "seq_len": 32, "lr": 3e-3,
            "warmup_steps": 0, "inner_steps": 3, "checkpoint_every": 100, "linger_s": 0.0}


def _signed(ledger: Ledger, record: Record, at_ms: int) -> None:
    result = ledger.submit(record.to_bytes(), at_ms)
    assert result.accepted, f"{record.kind}: {result.reason}"


def _passed_vote_in_ledger(data_dir: Path) -> str:
    """Genesis grant -> stake -> proposal -> yes vote, long enough ago that it is implemented."""
    config = from_settings(ECONOMICS)
    start = int(time.time() * 1000) - 20_000
    ledger = Ledger(data_dir, config)
    try:
        _signed(ledger, genesis_record(GENESIS_KEY, config, {VOTER_KEY.address: neuro(1000)}, start), start)
        _signed(ledger, Record.create(VOTER_KEY, "stake", config.network_id, start + 10, {"amount": neuro(200)},
                                      seq=1), start + 10)
        proposal = Record.create(VOTER_KEY, "proposal", config.network_id, start + 20,
                                 {"title": "the", "merges": [list(m) for m in MERGES]}, seq=2)
        _signed(ledger, proposal, start + 20)
        vote_at = start + 20 + 500  # inside the voting window (opens after 200 ms, closes after 1700)
        _signed(ledger, Record.create(VOTER_KEY, "vote", config.network_id, vote_at,
                                      {"proposal_id": proposal.record_id, "approve": True}, seq=3), vote_at)
        # The ledger's clock is its records' timestamps (replay.py): in a live network later records
        # keep arriving; here one later record carries the clock past the implementation time.
        later = start + 19_000
        _signed(ledger, Record.create(VOTER_KEY, "transfer", config.network_id, later,
                                      {"to": GENESIS_KEY.address, "amount": neuro(1),
                                       "fee": config.min_transfer_fee, "memo": ""}, seq=4), later)
    finally:
        ledger.close()
    return proposal.record_id


def _config(data_dir: Path, max_steps: int) -> NodeConfig:
    report = hardware.HardwareReport(hardware.detect_device("cpu"), 20.0, hardware.tier_for_ms(20.0),
                                     torch.__version__, time.time())
    hardware.save_cache(data_dir, report)
    return NodeConfig(data_dir=data_dir, port=0, max_steps=max_steps, devnet=True, training=dict(TRAINING),
                      economics=dict(ECONOMICS))


def _run(data_dir: Path, max_steps: int, events: list[Event] | None = None) -> NodeRuntime:
    runtimes: list[NodeRuntime] = []
    engine = NodeEngine(_config(data_dir, max_steps),
                        runtime_factory=lambda ctx: runtimes.append(create_runtime(ctx)) or runtimes[-1])
    if events is not None:
        engine.subscribe(events.append)
    engine.start()
    assert engine.wait(timeout=180) and engine.exit_code == 0
    return runtimes[0]


def test_a_passed_vote_grows_the_vocabulary_the_node_trains_on_and_survives_a_restart(tmp_path: Path) -> None:
    proposal_id = _passed_vote_in_ledger(tmp_path)
    events: list[Event] = []
    runtime = _run(tmp_path, max_steps=7, events=events)
    assert runtime.stage is not None and runtime.data is not None
    assert runtime.stage.shard.architecture.vocab == 266 + len(MERGES) == runtime.arch.vocab
    assert runtime.data.loader.merges_applied == len(MERGES)
    history = json.loads((tmp_path / "vocabulary.json").read_text())["history"]
    assert [entry["proposal"] for entry in history] == [proposal_id]
    assert runtime.summary()["loss_last"] is not None
    announced = [(e.vocab_size, e.applied) for e in events if isinstance(e, VocabularyChanged)]
    assert announced == [(266, ()), (268, (proposal_id,))]  # at start, then when the merges took effect
    point = read_resume_point(tmp_path)
    assert point is not None and point.arch.vocab == 268

    resumed = _run(tmp_path, max_steps=3)
    assert resumed.trainer is not None and resumed.trainer.driver_step > 7
    assert resumed.stage is not None and resumed.stage.shard.architecture.vocab == 268
