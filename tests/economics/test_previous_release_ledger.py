"""A volunteer's ledger written by the previous release (record version 1, git 8a0f18d) still
loads, keeps its balances and passes ``ledger verify``; its old proofs and challenges count under
the old rules until the network's first version-2 proof (app/node/economics/legacy.py).

The fixture is generated here the way 8a0f18d wrote it: version-1 record bytes (its canonical
JSON and signed payload, its proof and challenge bodies), its SQLite tables at schema version 1,
and the balance snapshot and state hash that release computed for these records (taken from a
run of the 8a0f18d code on exactly this scenario).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from app.crypto.keys import PrivateKey
from app.node.economics.constants import EconomicsConfig, neuro
from app.node.economics.ledger import Ledger
from app.node.economics.records import VERSION, Record
from tests.economics.helpers import Devnet, submit_all

T0 = 1_800_000_000_000


def key(n: int) -> PrivateKey:
    return PrivateKey((1000 + n).to_bytes(32, "big"))


G, A, B, C, D = (key(i) for i in range(5))
CONFIG = EconomicsConfig(genesis_public_key=G.public_key.data.hex())
EPOCH = T0 // CONFIG.epoch_ms
LATE = T0 + 40 * 60_000  # when the old node wrote the file: one uptime proof still pending

# What the 8a0f18d code stored for this scenario: (address, available, staked, locked,
# pending_rewards, unbonding, next_seq, flagged) and its state hash.
OLD_BALANCES = [
    ("ns11eb3f53e14abd8f321033db72f2cd7f2ffaae92c83771b90", 85000000, 0, 0, 0, 0, 1, 0),  # D, slashed
    ("ns14e119d3ab1d49963a03cb07e36bc9da846a5efa6a5af0619", 810000000, 200000000, 0, 0, 0, 3, 0),  # B
    ("ns1b38019d57923d53d8efdd85cdd1169fbbb9d96a3a2580a49", 995011010, 0, 0, 55, 0, 2, 0),  # A
    ("ns1dbeca3e3e631ad7d07e0d231a4f8d3bc0897c84842215614", 800000000, 200000000, 0, 0, 0, 3, 0),  # C
    ("ns11ead82080ef6cb4c450b62b7992e50bd632809512414d532", 95, 0, 0, 0, 0, 1, 0),  # fee pool
]
OLD_STATE_HASH = "a0d48a41650777568a556c5129058456d6fbf3e02aeb322594c558a35ca42429"

_OLD_SCHEMA = [
    """CREATE TABLE records (cursor INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL UNIQUE,
       kind TEXT NOT NULL, author TEXT NOT NULL, ts INTEGER NOT NULL, raw BLOB NOT NULL,
       received_ms INTEGER NOT NULL)""",
    "CREATE INDEX records_author ON records(author)",
    """CREATE TABLE balances (address TEXT PRIMARY KEY, available INTEGER NOT NULL, staked INTEGER NOT NULL,
       locked INTEGER NOT NULL, pending_rewards INTEGER NOT NULL, unbonding INTEGER NOT NULL,
       next_seq INTEGER NOT NULL, flagged INTEGER NOT NULL)""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "PRAGMA user_version = 1",
]


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def v1_record(author: PrivateKey, kind: str, ts: int, body: dict, seq: int = 0) -> tuple[str, bytes]:
    """(record id, bytes) of a record as 8a0f18d signed and stored it."""
    unsigned = {"v": 1, "net": CONFIG.network_id, "kind": kind, "author": author.public_key.data.hex(),
                "ts": ts, "seq": seq, "body": body}
    payload = b"NSREC1\n" + _canonical(unsigned)
    return hashlib.sha256(payload).hexdigest(), _canonical({**unsigned, "sig": author.sign(payload).hex()})


def v1_proof(author: PrivateKey, epoch: int, kind: str, nonce: str, offset_ms: int = 10, **work) -> tuple[str, bytes]:
    body = {"epoch": epoch, "nonce": nonce, "proof_kind": kind, "batches": work.get("batches", 0),
            "tokens": work.get("tokens", 0), "samples": 0, "layers": work.get("layers", 0), "role": "worker",
            "tier": 3, "uptime_ms": work.get("uptime_ms", 0), "async_mode": False,
            "model_before": work.get("before", ""), "model_after": work.get("after", "")}
    return v1_record(author, "proof", epoch * CONFIG.epoch_ms + offset_ms, body)


def v1_challenge(author: PrivateKey, proof_id: str, verdict: str, ts: int, seq: int,
                 evidence: str = "ab" * 32) -> tuple[str, bytes]:
    return v1_record(author, "challenge", ts, {"proof_id": proof_id, "verdict": verdict, "evidence": evidence}, seq)


def old_records() -> list[tuple[str, bytes]]:
    """Genesis, two staked checkers, A's training and uptime proofs (C passes the training one),
    D's training proof that B alone fails (one fail slashed then), a transfer, a pending proof."""
    allocations = sorted([[A.address, neuro(1000)], [B.address, neuro(1000)], [C.address, neuro(1000)],
                          [D.address, neuro(100)]])
    training_a = v1_proof(A, EPOCH + 1, "training", "01" * 16, batches=10, layers=2, tokens=5000,
                          before="01" * 32, after="02" * 32)
    training_d = v1_proof(D, EPOCH + 2, "training", "03" * 16, batches=20, layers=2, tokens=9000,
                          before="03" * 32, after="04" * 32)
    return [
        v1_record(G, "genesis", T0, {"allocations": allocations}),
        v1_record(B, "stake", T0 + 1, {"amount": neuro(200)}, seq=1),
        v1_record(C, "stake", T0 + 2, {"amount": neuro(200)}, seq=1),
        training_a,
        v1_proof(A, EPOCH + 1, "uptime", "02" * 16, uptime_ms=60_000),
        training_d,
        v1_challenge(C, training_a[0], "pass", (EPOCH + 1) * CONFIG.epoch_ms + 5000, seq=2, evidence="aa" * 32),
        v1_challenge(B, training_d[0], "fail", (EPOCH + 2) * CONFIG.epoch_ms + 5000, seq=2, evidence="bb" * 32),
        v1_record(A, "transfer", (EPOCH + 2) * CONFIG.epoch_ms + 6000,
                  {"to": D.address, "amount": neuro(5), "fee": 100, "memo": "thanks"}, seq=1),
        v1_proof(A, LATE // CONFIG.epoch_ms, "uptime", "04" * 16, uptime_ms=30_000),
    ]


def write_old_ledger(path: Path) -> Path:
    db = sqlite3.connect(path)
    for statement in _OLD_SCHEMA:
        db.execute(statement)
    for record_id, raw in old_records():
        data = json.loads(raw)
        db.execute("INSERT INTO records (record_id, kind, author, ts, raw, received_ms) VALUES (?,?,?,?,?,?)",
                   (record_id, data["kind"], data["author"], data["ts"], raw, data["ts"]))
    db.executemany("INSERT INTO balances VALUES (?,?,?,?,?,?,?,?)", OLD_BALANCES)
    db.execute("INSERT INTO meta VALUES ('state_hash', ?)", (OLD_STATE_HASH,))
    db.execute("INSERT INTO meta VALUES ('snapshot_records', '10')")
    db.commit()
    db.close()
    return path


def open_at(path: Path, now_ms: int) -> Ledger:
    return Ledger(path, CONFIG, clock=lambda: now_ms / 1000)


def test_previous_release_ledger_loads_with_the_balances_it_had(tmp_path):
    ledger = open_at(write_old_ledger(tmp_path / "ledger.sqlite"), LATE + 1000)
    report = ledger.verify()
    assert report.ok, report.summary()
    assert report.stored_state_hash == OLD_STATE_HASH == report.state_hash
    for address, available, staked, locked, pending, unbonding, _seq, _flag in OLD_BALANCES:
        balance = ledger.balance(address)
        assert (balance.available, balance.staked, balance.pending) == (available, staked + locked, pending + unbonding)
    # D's proof was slashed by B's single fail: the previous release's rule, kept for its records.
    records = old_records()
    assert ledger.record_status(records[5][0])[0] == "slashed"
    assert ledger.record_status(records[7][0]) == ("applied", "")
    ledger.close()


def test_a_pending_old_proof_settles_under_the_old_rules_after_the_upgrade(tmp_path):
    path = write_old_ledger(tmp_path / "ledger.sqlite")
    open_at(path, LATE + 1000).close()
    ledger = open_at(path, LATE + 2 * 3_600_000)
    # any new record moves the ledger's canonical clock past the proof's window
    assert ledger.submit(Devnet(config=CONFIG).signed(A, "stake", {"amount": 1}, LATE + 2 * 3_600_000, seq=2)
                         .to_bytes()).accepted
    balance = ledger.balance(A.address)
    assert balance.pending == 0
    assert balance.available == 995011010 + 55 - 1
    assert ledger.verify().ok
    ledger.close()


def test_new_records_are_version_2_and_old_rules_end_at_the_first_version_2_proof(tmp_path):
    devnet = Devnet(config=CONFIG)
    ledger = open_at(write_old_ledger(tmp_path / "a.sqlite"), LATE + 1000)
    epoch = LATE // CONFIG.epoch_ms + 1
    new_proof = devnet.proof(A, epoch, "training", tier=3)
    assert new_proof.version == VERSION == 2
    assert json.loads(new_proof.to_bytes())["v"] == 2
    old_after = v1_proof(C, epoch, "uptime", "05" * 16, offset_ms=500, uptime_ms=30_000)
    old_before = v1_proof(D, epoch, "uptime", "06" * 16, offset_ms=5, uptime_ms=30_000)
    now = epoch * CONFIG.epoch_ms + 1000
    results = [ledger.submit(raw, now) for raw in (new_proof.to_bytes(), old_after[1], old_before[1])]
    assert all(r.accepted for r in results), results
    assert ledger.record_status(new_proof.record_id) == ("applied", "")
    assert ledger.record_status(old_before[0]) == ("applied", "")  # stamped before the cut
    status, reason = ledger.record_status(old_after[0])
    assert status == "rejected" and "record version 2" in reason
    # An old-rules verdict (one fail slashed) on the new proof is refused too.
    cross = v1_challenge(B, new_proof.record_id, "fail", now - 100, seq=3)
    assert ledger.submit(cross[1], now).accepted
    status, reason = ledger.record_status(cross[0])
    assert status == "rejected" and "record version 2" in reason
    # The same records in another order give the same state (the cut is canonical, not arrival).
    other = open_at(write_old_ledger(tmp_path / "b.sqlite"), LATE + 1000)
    for raw in (cross[1], old_before[1], old_after[1], new_proof.to_bytes()):
        other.submit(raw, now)
    assert other.state_hash() == ledger.state_hash()
    ledger.close()
    other.close()


def test_a_version_2_verdict_cannot_judge_an_old_proof(tmp_path):
    devnet = Devnet(config=CONFIG)
    ledger = open_at(write_old_ledger(tmp_path / "ledger.sqlite"), LATE + 1000)
    pending = old_records()[9][0]
    body = {"proof_id": pending, "verdict": "fail", "step": 0, "leaf": "00" * 32, "output_hash": "00" * 32,
            "error_ppm": 0}
    verdict = devnet.signed(B, "challenge", body, LATE + 500, seq=3)
    assert submit_all(ledger, [verdict], LATE + 1000)[0].accepted
    status, reason = ledger.record_status(verdict.record_id)
    assert status == "rejected" and "cannot judge" in reason
    ledger.close()


@pytest.mark.parametrize("field", ["work_root", "layer_us"])
def test_a_version_1_proof_with_version_2_fields_is_refused(field):
    _rid, raw = v1_proof(A, EPOCH + 1, "uptime", "07" * 16, uptime_ms=1000)
    data = json.loads(raw)
    data["body"][field] = "" if field == "work_root" else 100
    with pytest.raises(ValueError, match="exactly the fields"):
        Record.from_bytes(_canonical(data), check_signature=False)
