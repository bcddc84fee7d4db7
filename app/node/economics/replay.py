"""Replays a set of records into a ``LedgerState``: the ledger's consensus rule in one function.

See ``state.py`` for the three ideas (conflicts refuse both records, canonical order by
(timestamp, id) with sequence gaps waiting, timed events on the canonical clock).
"""

from __future__ import annotations

from collections.abc import Iterable

from app.node.economics import handlers, settlement
from app.node.economics.constants import EconomicsConfig
from app.node.economics.records import SEQUENCED_KINDS, Record
from app.node.economics.state import LedgerState, find_conflicts
from app.wallet.keys import address_from_public_key

CONFLICT_REASON = "double spend: another record by this author uses the same sequence number or slot"


def compute_state(records: Iterable[Record], config: EconomicsConfig) -> LedgerState:
    """Applies ``records`` (signatures already checked) in canonical order; pure and deterministic."""
    ordered = sorted(records, key=lambda r: (r.timestamp_ms, r.record_id))
    state = LedgerState(config=config)
    conflicting, flagged_since = find_conflicts(ordered)
    for author in flagged_since:
        state.account(address_from_public_key(author)).flagged = True
    waiting: dict[tuple[bytes, int], Record] = {}
    for record in ordered:
        settlement.run_events(state, record.timestamp_ms)
        state.clock_ms = max(state.clock_ms, record.timestamp_ms)
        rid = record.record_id
        if rid in conflicting:
            state.statuses[rid] = ("conflict", CONFLICT_REASON)
        elif record.kind in SEQUENCED_KINDS:
            _apply_sequenced(state, record, waiting)
        elif record.timestamp_ms >= flagged_since.get(record.author, record.timestamp_ms + 1):
            state.statuses[rid] = ("rejected", "author is flagged for a double spend")
        else:
            handlers.apply_record(state, record, record.timestamp_ms)
    settlement.run_events(state, state.clock_ms)
    for record in waiting.values():
        state.statuses[record.record_id] = ("waiting", "an earlier sequence number of this account is missing")
    return state


def _apply_sequenced(state: LedgerState, record: Record, waiting: dict[tuple[bytes, int], Record]) -> None:
    """Applies a spending record in sequence order; later sequence numbers wait for the gap."""
    account = state.account(address_from_public_key(record.author))
    if record.seq > account.next_seq:
        waiting[(record.author, record.seq)] = record
        return
    if record.seq < account.next_seq:
        state.statuses[record.record_id] = ("rejected", "sequence number already used")
        return
    handlers.apply_record(state, record, record.timestamp_ms)
    account.next_seq += 1
    while (record.author, account.next_seq) in waiting:
        later = waiting.pop((record.author, account.next_seq))
        handlers.apply_record(state, later, max(later.timestamp_ms, state.clock_ms))
        account.next_seq += 1
