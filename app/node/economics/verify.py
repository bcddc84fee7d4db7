"""``ledger verify``: trust nothing on disk, re-derive everything.

Reads every stored record again, re-parses it strictly, re-checks its signature, replays the
whole set from scratch and compares the result with the balance snapshot and state hash the node
last wrote. A mismatch means the database was edited or damaged outside the ledger.

Signed, valid records can still be a failure: two records of one author on the same sequence
number or slot (a double spend, or two processes sharing one wallet) void each other and flag the
author. Those are reported too and fail the check, because the balances they leave are not what
the wallet's owner meant.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from app.node.economics import replay
from app.node.economics.constants import EconomicsConfig
from app.node.economics.records import InvalidRecord, Record


@dataclass
class VerifyReport:
    records_checked: int = 0
    bad_records: list[tuple[str, str]] = field(default_factory=list)  # (record id, reason)
    balance_mismatches: list[str] = field(default_factory=list)  # addresses
    conflicts: list[str] = field(default_factory=list)  # record ids voided by a double spend
    flagged: list[str] = field(default_factory=list)  # addresses flagged for a double spend
    state_hash: str = ""
    stored_state_hash: str = ""

    @property
    def ok(self) -> bool:
        return not self.bad_records and not self.balance_mismatches and not self.conflicts \
            and not self.flagged and (not self.stored_state_hash or self.stored_state_hash == self.state_hash)

    def summary(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        hash_note = ("" if not self.stored_state_hash or self.stored_state_hash == self.state_hash
                     else f" (stored {self.stored_state_hash} differs)")
        return (f"ledger verify: {verdict}: {self.records_checked} records, {len(self.bad_records)} bad, "
                f"{len(self.conflicts)} double-spend conflicts, {len(self.flagged)} flagged accounts, "
                f"{len(self.balance_mismatches)} balance mismatches, state hash {self.state_hash}{hash_note}")


def verify_database(db: sqlite3.Connection, config: EconomicsConfig) -> VerifyReport:
    report = VerifyReport()
    good: list[Record] = []
    for record_id, raw in db.execute("SELECT record_id, raw FROM records ORDER BY cursor"):
        report.records_checked += 1
        try:
            record = Record.from_bytes(bytes(raw))
        except InvalidRecord as exc:
            report.bad_records.append((record_id, exc.reason))
            continue
        if record.record_id != record_id:
            report.bad_records.append((record_id, "stored id does not match the record's content"))
            continue
        good.append(record)
    state = replay.compute_state(good, config)
    report.state_hash = state.state_hash()
    report.conflicts = sorted(state.conflicting)
    report.flagged = sorted(address for address, account in state.accounts.items() if account.flagged)
    stored = {row[0]: row[1:] for row in db.execute(
        "SELECT address, available, staked, locked, pending_rewards, unbonding, next_seq, flagged FROM balances")}
    for address in sorted(set(stored) | set(state.accounts)):
        account = state.accounts.get(address)
        expected = None if account is None else (
            account.available, account.staked, account.locked, account.pending_rewards, account.unbonding,
            account.next_seq, int(account.flagged))
        if stored.get(address) != expected:
            report.balance_mismatches.append(address)
    row = db.execute("SELECT value FROM meta WHERE key = 'state_hash'").fetchone()
    report.stored_state_hash = row[0] if row else ""
    return report
