"""The NEURO ledger: signed records in SQLite, balances derived from them.

The gossip surface is deliberately small (the P2P layer carries raw record bytes over gRPC):
``submit`` / ``submit_many`` take bytes from anyone, ``have`` says which ids are known,
``records_since`` pages through stored records by a local cursor, ``state_hash`` lets two nodes
compare. Everything else is a query for the wallet and the UI.

What is stored: every record that passes the checks at the door (strict parse, signature,
network id, not from the future, PoNW rules that need no state). Whether a stored record *counts*
is decided by ``replay.compute_state`` over all of them, so the same set of records gives the same
balances on every node whatever order they arrived in. A second record on a taken slot (same
account and sequence number) is stored too, as evidence: it makes both records void and flags the
account on every node that sees the pair. The state is recomputed lazily after changes, and a
snapshot of the balances is written in one transaction so ``verify`` can compare them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from app.crypto.keys import SIGNATURE_SIZE, address_from_public_key
from app.node.economics import handlers, ponw, replay
from app.node.economics.constants import EconomicsConfig
from app.node.economics.governance import Proposal, merges_due
from app.node.economics.records import SEQUENCED_KINDS, SIGN_PREFIX, V1, InvalidRecord, Record
from app.node.economics.schema import LedgerError, connect, migrate, transaction
from app.node.economics.state import Entry, LedgerState, slots
from app.node.economics.verify import VerifyReport, verify_database

__all__ = ["Balance", "Ledger", "LedgerError", "SubmitResult", "VerifyReport"]
DB_NAME = "ledger.sqlite"
MAX_PAGE = 1000


@dataclass(frozen=True)
class SubmitResult:
    """``status`` is "accepted", "duplicate" or "rejected"; ``reason`` says why it was rejected."""

    status: str
    record_id: str = ""
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


@dataclass(frozen=True)
class Balance:
    """micro-NEURO. ``staked`` includes locked proposal stakes and challenge bonds; ``pending`` is
    rewards still inside their challenge window plus unstaked coins still unbonding."""

    available: int
    staked: int
    pending: int


class Ledger:
    """One node's ledger. Thread-safe: every public method holds one lock."""

    def __init__(self, path: Path, config: EconomicsConfig, clock: Callable[[], float] = time.time) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / DB_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.config = config
        self._clock = clock
        self._lock = threading.RLock()
        self._db = connect(str(path))
        migrate(self._db)
        self._records: dict[str, Record] = {}
        self._slots: dict[tuple, str] = {}
        self._max_seq: dict[str, int] = defaultdict(int)  # address -> highest stored sequence number
        self._state: LedgerState | None = None
        self._unapplied: list[Record] = []  # stored since the state was last brought up to date
        # The balance snapshot on disk is rewritten only after this process stored new records, so
        # `verify` still sees (and reports) a snapshot edited behind the ledger's back.
        self._snapshot_dirty = False
        self._load()

    # --- gossip surface ---------------------------------------------------------------------

    def submit(self, raw: bytes, now_ms: int | None = None) -> SubmitResult:
        """Checks and stores one record from a peer or from this node; never raises on bad input."""
        return self.submit_many([raw], now_ms)[0]

    def submit_many(self, raws: Iterable[bytes], now_ms: int | None = None) -> list[SubmitResult]:
        """Like ``submit`` for a batch, stored in one transaction (what a gossip round delivers)."""
        now_ms = int(self._clock() * 1000) if now_ms is None else now_ms
        with self._lock:
            results, fresh = [], []
            for raw in raws:
                result, record = self._admit(raw, now_ms)
                results.append(result)
                if record is not None:
                    fresh.append(record)
            if fresh:
                self._store(fresh, now_ms)
            return results

    def have(self, record_ids: Iterable[str]) -> set[str]:
        with self._lock:
            return {rid for rid in record_ids if rid in self._records}

    def records_since(self, cursor: int, limit: int = 500) -> tuple[list[bytes], int]:
        """Stored records after ``cursor`` (0 = from the start) and the cursor to ask next time."""
        limit = max(1, min(limit, MAX_PAGE))
        with self._lock:
            rows = self._db.execute(
                "SELECT cursor, raw FROM records WHERE cursor > ? ORDER BY cursor LIMIT ?",
                (cursor, limit)).fetchall()
        next_cursor = rows[-1][0] if rows else cursor
        return [bytes(raw) for _, raw in rows], next_cursor

    def record_ids_since(self, cursor: int, limit: int = 500) -> tuple[list[str], int]:
        """Like ``records_since`` but only the ids: an inventory a peer filters with ``have``."""
        limit = max(1, min(limit, MAX_PAGE))
        with self._lock:
            rows = self._db.execute(
                "SELECT cursor, record_id FROM records WHERE cursor > ? ORDER BY cursor LIMIT ?",
                (cursor, limit)).fetchall()
        return [rid for _, rid in rows], (rows[-1][0] if rows else cursor)

    def get_records(self, record_ids: Iterable[str]) -> list[bytes]:
        """The stored bytes of the requested ids that this ledger holds (unknown ids are skipped)."""
        wanted = list(dict.fromkeys(record_ids))[:MAX_PAGE]
        with self._lock:
            return [self._records[rid].to_bytes() for rid in wanted if rid in self._records]

    def state_hash(self) -> str:
        with self._lock:
            return self._current().state_hash()

    # --- queries ----------------------------------------------------------------------------

    def balance(self, address: str) -> Balance:
        with self._lock:
            account = self._current().accounts.get(address)
        if account is None:
            return Balance(0, 0, 0)
        return Balance(account.available, account.staked + account.locked,
                       account.pending_rewards + account.unbonding)

    def is_flagged(self, address: str) -> bool:
        with self._lock:
            account = self._current().accounts.get(address)
        return bool(account and account.flagged)

    def next_seq(self, address: str) -> int:
        """The sequence number the account's next spending record must carry."""
        with self._lock:
            stored = self._max_seq.get(address, 0)
            account = self._current().accounts.get(address)
            return max(stored + 1, account.next_seq if account else 1)

    def verification_work_since(self, cursor: int, limit: int = 500) -> tuple[list[Record], int, bool]:
        """Training proofs a verifier could re-run (version 2: they commit to steps) stored after
        ``cursor``, the cursor to ask next time, and whether more are waiting: a verifier reads
        each proof once, however long the ledger grows."""
        limit = max(1, min(limit, MAX_PAGE))
        with self._lock:
            rows = self._db.execute(
                "SELECT cursor, record_id FROM records WHERE cursor > ? AND kind = 'proof' ORDER BY cursor LIMIT ?",
                (cursor, limit)).fetchall()
            records = [self._records[rid] for _, rid in rows if rid in self._records]
        proofs = [r for r in records if r.body.get("proof_kind") == "training" and r.version != V1]
        return proofs, (rows[-1][0] if rows else cursor), len(rows) == limit

    def proof_standing(self, proof_id: str) -> tuple[bool, int | None]:
        """(whether the proof is applied and its window still open, the committed step of a
        standing fail verdict or None if nobody failed it): what a verifier referees."""
        with self._lock:
            proof = self._current().proofs.get(proof_id)
            if proof is None or proof.settled:
                return False, None
            failed = sorted(proof.steps[c] for c in proof.fails)
            return True, (failed[0] if failed else None)

    def judged_by(self, proof_id: str, address: str) -> bool:
        with self._lock:
            proof = self._current().proofs.get(proof_id)
            return proof is not None and (address in proof.fails or address in proof.passes)

    def checks_done(self, address: str, epoch: int) -> int:
        """Verdicts of ``address`` applied in ``epoch``: what its verification proof may claim."""
        with self._lock:
            return self._current().checks_by_epoch.get((address, epoch), 0)

    def receipted_samples(self, server: str, epoch: int) -> int:
        """Samples receivers signed receipts for, served by ``server`` in ``epoch``: what its data
        proof for that epoch may claim."""
        with self._lock:
            return sum(self._current().receipts.get((server, epoch), {}).values())

    def merged_layer_batches(self, contributor: str, epoch: int) -> int:
        """Layer-batches of ``contributor``'s async pseudo-gradients that stage holders signed
        ``async_receipt`` records for in ``epoch``: what its async proof for that epoch may claim."""
        with self._lock:
            return handlers.merged_layer_batches(self._current(), contributor, epoch)

    def async_claim(self, contributor: str, epoch: int) -> tuple[int, int]:
        """(batches, layers) an async proof of ``contributor`` for ``epoch`` may claim: the fewest
        batches any merged stage took and all the merged stages' layers (within what was signed)."""
        with self._lock:
            stages = handlers.merged_by_stage(self._current(), contributor, epoch)
        if not stages:
            return 0, 0
        return min(b for _, b in stages.values()), sum(layers for layers, _ in stages.values())

    def proof_reward(self, record_id: str) -> int | None:
        """The provisional reward this ledger granted the proof ``record_id`` when it applied it
        (None: no applied proof of that id)."""
        with self._lock:
            proof = self._current().proofs.get(record_id)
            return proof.reward if proof is not None else None

    def record_status(self, record_id: str) -> tuple[str, str]:
        """("applied" | "waiting" | "rejected" | "conflict" | "slashed" | "unknown", reason)."""
        with self._lock:
            return self._current().statuses.get(record_id, ("unknown", "record not held by this node"))

    def history(self, address: str, limit: int = 100, kinds: Iterable[str] | None = None) -> list[Entry]:
        """The account's entries, newest first (transfers, stakes, proofs, rewards, slashes ...)."""
        wanted = set(kinds) if kinds is not None else None
        with self._lock:
            entries = [e for e in self._current().entries
                       if e.address == address and (wanted is None or e.kind in wanted)]
        entries.sort(key=lambda e: (e.timestamp_ms, e.record_id), reverse=True)
        return entries[:limit]

    def earnings(self, address: str, by: str = "day") -> dict[str, int]:
        """Minted rewards per UTC day ("YYYY-MM-DD") or per proof kind, in micro-NEURO."""
        if by not in ("day", "kind"):
            raise ValueError("earnings(by=...) must be 'day' or 'kind'")
        totals: dict[str, int] = defaultdict(int)
        for entry in self.history(address, limit=10**9, kinds=("reward",)):
            key = entry.detail if by == "kind" else time.strftime("%Y-%m-%d", time.gmtime(entry.timestamp_ms / 1000))
            totals[key] += entry.amount
        return dict(totals)

    def proposals(self) -> list[Proposal]:
        with self._lock:
            return sorted(self._current().proposals.values(), key=lambda p: (p.created_ms, p.proposal_id))

    def merges_due(self, applied: set[str]) -> list[tuple[str, list[tuple[bytes, bytes]]]]:
        """Implemented vocabulary proposals not yet in ``applied`` (see ``governance.merges_due``)."""
        return merges_due(self.proposals(), applied)

    def totals(self) -> dict[str, int]:
        with self._lock:
            state = self._current()
            return {"minted": state.minted, "burned": state.burned, "records": len(self._records),
                    "staked": state.total_staked()}

    def verify(self) -> VerifyReport:
        """Re-checks every stored signature and recomputes every balance from scratch."""
        with self._lock:
            self._current()  # make sure the snapshot being compared is this node's latest
            return verify_database(self._db, self.config)

    def close(self) -> None:
        with self._lock:
            if self._snapshot_dirty:
                self._current()
            self._db.close()

    # --- internals --------------------------------------------------------------------------

    def _admit(self, raw: bytes, now_ms: int) -> tuple[SubmitResult, Record | None]:
        held = self._held_copy(raw)
        if held is not None:  # byte for byte a record already checked and stored: nothing to parse
            return SubmitResult("duplicate", held), None
        try:
            record = Record.from_bytes(raw, check_signature=False)
            if record.record_id in self._records:
                # Gossip delivers most records more than once: skip the signature check for a
                # record already held (the id covers everything but the signature, and the
                # stored copy's signature was checked when it arrived).
                return SubmitResult("duplicate", record.record_id), None
            record.check_signature()
            self._door_checks(record, now_ms)
        except (InvalidRecord, ponw.ProofRejected) as exc:
            return SubmitResult("rejected", reason=exc.reason), None
        rid = record.record_id
        claimed = slots(record)
        taken = [self._slots[s] for s in claimed if s in self._slots]
        self._records[rid] = record
        for slot in claimed:
            self._slots.setdefault(slot, rid)
        self._note_seq(record)
        if taken:
            return SubmitResult("rejected", rid, "double spend: both records are void and the account "
                                                 "is flagged"), record
        return SubmitResult("accepted", rid), record

    def _held_copy(self, raw: bytes) -> str | None:
        """The id of a stored record whose bytes are exactly ``raw``, else None. Gossip delivers most
        records more than once; a stored record's bytes are canonical, so its id can be read off
        identical bytes without parsing them (``Record.from_bytes`` cuts the signature the same way)."""
        if not isinstance(raw, bytes):
            return None
        cut = raw.rfind(b',"sig":"')
        if cut < 0:
            return None
        payload = SIGN_PREFIX + raw[:cut] + raw[cut + len(b',"sig":"') + 2 * SIGNATURE_SIZE + 1:]
        rid = hashlib.sha256(payload).hexdigest()
        stored = self._records.get(rid)
        return rid if stored is not None and stored.to_bytes() == raw else None

    def _door_checks(self, record: Record, now_ms: int) -> None:
        if record.network != self.config.network_id:
            raise InvalidRecord(f"record belongs to network {record.network!r}, not {self.config.network_id!r}")
        if record.timestamp_ms > now_ms + self.config.max_clock_skew_ms:
            raise InvalidRecord("timestamp is in the future beyond the allowed clock skew")
        if record.kind == "genesis" and record.author.hex() != self.config.genesis_public_key:
            raise InvalidRecord("genesis record not signed by this network's genesis key")
        if record.kind == "proof":
            ponw.check_proof(record, self.config, now_ms)

    def _store(self, records: list[Record], now_ms: int) -> None:
        try:
            with transaction(self._db):
                self._db.executemany(
                    "INSERT INTO records (record_id, kind, author, ts, raw, received_ms) VALUES (?,?,?,?,?,?)",
                    [(r.record_id, r.kind, r.author.hex(), r.timestamp_ms, r.to_bytes(), now_ms)
                     for r in records])
        except Exception:
            for record in records:  # keep memory and disk in step: forget what was not written
                self._records.pop(record.record_id, None)
            self._rebuild_indexes()
            raise
        self._unapplied.extend(records)
        self._snapshot_dirty = True

    def _load(self) -> None:
        for (raw,) in self._db.execute("SELECT raw FROM records ORDER BY cursor"):
            try:
                record = Record.from_bytes(bytes(raw), check_signature=False)
            except InvalidRecord as exc:
                raise LedgerError(f"stored record is damaged ({exc.reason}); run `ledger verify`") from exc
            self._records[record.record_id] = record
        self._rebuild_indexes()
        row = self._db.execute("SELECT value FROM meta WHERE key = 'snapshot_records'").fetchone()
        self._snapshot_dirty = (int(row[0]) if row else 0) != len(self._records)  # e.g. a crash mid-way

    def _rebuild_indexes(self) -> None:
        self._slots.clear()
        self._max_seq.clear()
        for rid, record in self._records.items():
            for slot in slots(record):
                self._slots.setdefault(slot, rid)
            self._note_seq(record)

    def _note_seq(self, record: Record) -> None:
        if record.kind in SEQUENCED_KINDS:
            address = address_from_public_key(record.author)
            self._max_seq[address] = max(self._max_seq[address], record.seq)

    def _current(self) -> LedgerState:
        if self._state is None or (self._unapplied and not replay.extend(self._state, self._unapplied)):
            self._state = replay.compute_state(self._records.values(), self.config)
        self._unapplied.clear()
        if self._snapshot_dirty:
            self._write_snapshot(self._state)
            self._snapshot_dirty = False
        return self._state

    def _write_snapshot(self, state: LedgerState) -> None:
        rows = [(addr, a.available, a.staked, a.locked, a.pending_rewards, a.unbonding, a.next_seq, int(a.flagged))
                for addr, a in state.accounts.items()]
        with transaction(self._db):
            self._db.execute("DELETE FROM balances")
            self._db.executemany("INSERT INTO balances VALUES (?,?,?,?,?,?,?,?)", rows)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('state_hash', ?)", (state.state_hash(),))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('snapshot_records', ?)", (str(len(self._records)),))
