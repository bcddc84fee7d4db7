"""Balances as a deterministic function of a set of valid signed records.

``replay.compute_state(records, config)`` is the whole consensus rule of the ledger: it depends only on
the *set* of records (never on arrival order or the local clock), so two nodes that hold the
same records reach the same balances and the same ``state_hash``. How:

1. Conflicts first. Each record claims slots: a spending record claims (account, seq); a proof
   claims (node, epoch, kind) and (node, nonce). Two different records on one slot are a double spend (or equivocation): *both* are
   refused and the author is flagged, whichever arrived first, so the outcome cannot depend on
   which half of the network saw which record first.
2. Canonical order: records are applied sorted by (timestamp, record id). A spending record whose
   sequence number is ahead of the account waits until the gap is filled; a rejected record still
   uses its sequence number (the author signed it), so a bad record cannot block an account.
3. Timed events (epoch settlement after the challenge window, end of unbonding, governance phase
   changes) fire when the canonical clock passes them: the clock is the timestamp of the record
   being applied, and after the last record, the largest timestamp seen.

This module holds the state's types and the conflict rule; ``handlers.py`` applies each kind of
record, ``settlement.py`` the timed events and ``replay.py`` ties them together.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.crypto.keys import address_from_public_key
from app.node.economics import governance
from app.node.economics.constants import EconomicsConfig
from app.node.economics.records import SEQUENCED_KINDS, Record, canonical_json

FEE_POOL = address_from_public_key(b"neuroshard:fee-pool")
"""System account receiving the unburned share of fees. Its address hashes a string that is not a
curve point, so no private key can ever sign for it."""
PPM = 1_000_000


@dataclass
class Account:
    available: int = 0
    staked: int = 0
    locked: int = 0  # proposal stakes and challenge bonds
    pending_rewards: int = 0  # provisional until the epoch settles
    unbonding: int = 0  # unstaked, released after the challenge window (still slashable)
    next_seq: int = 1
    flagged: bool = False


@dataclass(frozen=True)
class Entry:
    """One line of an account's history (records and derived rewards/slashes alike)."""

    address: str
    timestamp_ms: int
    kind: str
    amount: int  # change of the available balance (or of the bucket named in ``detail``)
    record_id: str
    detail: str = ""


@dataclass
class ProofState:
    record: Record
    reward: int
    fails: dict[str, int] = field(default_factory=dict)  # checker -> bond locked
    passes: dict[str, int] = field(default_factory=dict)  # checker -> bond locked
    steps: dict[str, int] = field(default_factory=dict)  # checker -> the committed step it re-ran

    def upheld_steps(self, confirmations: int) -> set[int]:
        """Steps that at least ``confirmations`` checkers failed and more failed than passed:
        verdicts on different steps are about different claims and never cancel out."""
        fails: dict[int, int] = {}
        passes: dict[int, int] = {}
        for checker in self.fails:
            fails[self.steps[checker]] = fails.get(self.steps[checker], 0) + 1
        for checker in self.passes:
            passes[self.steps[checker]] = passes.get(self.steps[checker], 0) + 1
        return {step for step, n in fails.items() if n >= confirmations and n > passes.get(step, 0)}

    def refuted(self, checker: str) -> bool:
        """A fail that at least as many checkers of the same step found right."""
        step = self.steps[checker]
        fails = sum(1 for c in self.fails if self.steps[c] == step)
        return sum(1 for c in self.passes if self.steps[c] == step) >= fails
    settled: bool = False


@dataclass
class LedgerState:
    """The result of applying every record; read by ``Ledger`` and its queries."""

    config: EconomicsConfig
    accounts: dict[str, Account] = field(default_factory=dict)
    statuses: dict[str, tuple[str, str]] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    proofs: dict[str, ProofState] = field(default_factory=dict)
    epoch_proofs: dict[int, list[str]] = field(default_factory=dict)
    proof_epochs: dict[str, list[int]] = field(default_factory=dict)
    work_spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    checks_by_epoch: dict[tuple[str, int], int] = field(default_factory=dict)
    """Verdicts (challenge records) each verifier had applied per epoch: what its verification
    proof for that epoch may claim."""
    """Per node, the sorted (start, end) wall-time spans its accepted training and inference
    proofs claim: a node computes in each moment once (``handlers._claim_span``)."""
    receipts: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    """(server, epoch) -> receiver -> samples it signed for: what a data proof may claim."""
    async_receipts: dict[tuple[str, int], dict[str, tuple[int, int, int]]] = field(default_factory=dict)
    """(async contributor, epoch) -> holder -> (first layer, layers, batches) it merged into an
    outer step: what an async proof may claim (``handlers._async_receipt``)."""
    v2_proof_applied: bool = False
    """A version-2 proof has been applied: later version-1 proofs and challenges are refused
    (``legacy.py``)."""
    minted_by_day: dict[tuple[str, int], int] = field(default_factory=dict)
    proposals: dict[str, governance.Proposal] = field(default_factory=dict)
    burned: int = 0
    minted: int = 0
    clock_ms: int = 0
    genesis_done: bool = False
    # bookkeeping of the replay itself, kept so new records can be appended without a full replay
    slot_owner: dict[tuple, str] = field(default_factory=dict)
    conflicting: set[str] = field(default_factory=set)
    flagged_since: dict[bytes, int] = field(default_factory=dict)
    waiting: dict[tuple[bytes, int], Record] = field(default_factory=dict)
    last_key: tuple[int, str] = (-1, "")
    _events: list[tuple[int, int, str, str]] = field(default_factory=list)
    _scheduled: set[tuple[str, str]] = field(default_factory=set)

    def account(self, address: str) -> Account:
        if address not in self.accounts:
            self.accounts[address] = Account()
        return self.accounts[address]

    def schedule(self, due_ms: int, rank: int, action: str, key: str) -> None:
        """Queues a timed event once; ties break on (rank, key) so every node fires in one order."""
        if (action, key) not in self._scheduled:
            self._scheduled.add((action, key))
            heapq.heappush(self._events, (due_ms, rank, action, key))

    def note(self, address: str, ts: int, kind: str, amount: int, record_id: str, detail: str = "") -> None:
        self.entries.append(Entry(address, ts, kind, amount, record_id, detail))

    def total_staked(self) -> int:
        return sum(a.staked for a in self.accounts.values())

    def state_hash(self) -> str:
        """SHA-256 over every balance, flag, proposal outcome and record status, canonically encoded."""
        accounts = [[addr, a.available, a.staked, a.locked, a.pending_rewards, a.unbonding, a.next_seq,
                     a.flagged] for addr, a in sorted(self.accounts.items())]
        proposals = [[pid, p.phase.value, p.approve_weight, p.reject_weight]
                     for pid, p in sorted(self.proposals.items())]
        statuses = hashlib.sha256("\n".join(
            f"{rid}:{status}" for rid, (status, _) in sorted(self.statuses.items())).encode()).hexdigest()
        summary = {"accounts": accounts, "proposals": proposals, "statuses": statuses,
                   "burned": self.burned, "minted": self.minted}
        return hashlib.sha256(canonical_json(summary)).hexdigest()


def slots(record: Record) -> list[tuple]:
    """The uniqueness claims of a record; two different records on one slot conflict."""
    author = record.author
    if record.kind in SEQUENCED_KINDS:
        # A second vote or verdict on the same proposal/proof is not a slot conflict: the first in
        # canonical order counts and the later one is refused by the state rules, so a vote sent
        # too early and then again in the window does not get an honest account flagged.
        return [("seq", author, record.seq)]
    if record.kind == "proof":
        return [("proof", author, record.body["epoch"], record.body["proof_kind"]),
                ("nonce", author, record.body["nonce"])]
    if record.kind == "genesis":
        return [("genesis",)]
    return []


def find_conflicts(records: Iterable[Record], owners: dict[tuple, str] | None = None
                   ) -> tuple[set[str], dict[bytes, int]]:
    """Ids of records that share a slot with a different record (in ``records`` or already in
    ``owners``, which is updated), and each offender's first conflict time: from then on the
    author is flagged."""
    owners = {} if owners is None else owners
    by_id: dict[str, Record] = {}
    conflicting: set[str] = set()
    for record in records:
        by_id[record.record_id] = record
        for slot in slots(record):
            other = owners.setdefault(slot, record.record_id)
            if other != record.record_id:
                conflicting.update((other, record.record_id))
    flagged_since: dict[bytes, int] = {}
    for rid in conflicting & by_id.keys():
        rec = by_id[rid]
        flagged_since[rec.author] = min(flagged_since.get(rec.author, rec.timestamp_ms), rec.timestamp_ms)
    return conflicting, flagged_since
