"""What happened to proofs, per kind: made, accepted, refused (with reasons), checked, challenged,
slashed. Read from ledger state (what every node agrees on) plus each node's own count of the
proofs it made (a proof refused at its own door never reaches a ledger).

``report_from_dirs`` is what the devnet summary prints: it unions the records of every node's
ledger file in the given data dirs, replays them once and reports on the result.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.node.economics import replay
from app.node.economics.constants import PROOF_KINDS, EconomicsConfig
from app.node.economics.records import InvalidRecord, Record
from app.node.economics.state import LedgerState

OWN_PROOFS_FILE = "proofs_made.json"
"""Written by the node's economy: per kind, proofs it signed and those its own ledger refused."""


def empty_row() -> dict[str, Any]:
    return {"made": 0, "accepted": 0, "refused": 0, "refused_reasons": {}, "checked": 0, "challenged": 0,
            "slashed": 0}


def proof_report(state: LedgerState, records: Iterable[Record],
                 own: Iterable[dict[str, Any]] = ()) -> dict[str, dict[str, Any]]:
    """Per proof kind, for the proof ``records`` replayed into ``state``; ``own`` are the nodes'
    ``OWN_PROOFS_FILE`` contents (what they made, and refusals at their own door)."""
    rows = {kind: empty_row() for kind in PROOF_KINDS}
    seen: dict[str, int] = dict.fromkeys(PROOF_KINDS, 0)
    for record in records:
        if record.kind != "proof":
            continue
        kind = record.body["proof_kind"]
        row = rows[kind]
        seen[kind] += 1
        status, reason = state.statuses.get(record.record_id, ("unknown", "not replayed"))
        if status in ("applied", "slashed"):
            row["accepted"] += 1
        else:
            row["refused"] += 1
            row["refused_reasons"][reason] = row["refused_reasons"].get(reason, 0) + 1
        proof = state.proofs.get(record.record_id)
        if status == "slashed":
            row["slashed"] += 1
        if proof is not None and (proof.fails or proof.passes):
            row["checked"] += 1
        if proof is not None and proof.fails:
            row["challenged"] += 1
    made = dict.fromkeys(PROOF_KINDS, 0)
    for node in own:
        for kind, counts in node.items():
            if kind not in rows or not isinstance(counts, dict):
                continue
            made[kind] += int(counts.get("made", 0))
            for reason, n in dict(counts.get("refused_at_door", {})).items():
                rows[kind]["refused"] += int(n)
                rows[kind]["refused_reasons"][reason] = rows[kind]["refused_reasons"].get(reason, 0) + int(n)
    for kind, row in rows.items():
        row["made"] = max(made[kind], seen[kind])
    return {kind: row for kind, row in rows.items() if row["made"]}


def _records(db_path: Path) -> list[Record]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        raws = [bytes(row[0]) for row in db.execute("SELECT raw FROM records")]
    except sqlite3.DatabaseError:
        return []
    finally:
        db.close()
    out = []
    for raw in raws:
        try:
            out.append(Record.from_bytes(raw))
        except InvalidRecord:
            continue
    return out


def report_from_dirs(dirs: Iterable[Path], config: EconomicsConfig) -> dict[str, dict[str, Any]]:
    """One report over the union of the ledgers (and own-proof counts) in ``dirs``."""
    records: dict[str, Record] = {}
    own: list[dict[str, Any]] = []
    for d in dirs:
        if (d / "ledger.sqlite").exists():
            for record in _records(d / "ledger.sqlite"):
                records[record.record_id] = record
        path = d / OWN_PROOFS_FILE
        if path.exists():
            try:
                own.append(json.loads(path.read_text()))
            except ValueError:
                continue
    return proof_report(replay.compute_state(records.values(), config), records.values(), own)
