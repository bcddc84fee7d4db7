"""Replays a set of records into a ``LedgerState``: the ledger's consensus rule in one function.

See ``state.py`` for the three ideas (conflicts refuse both records, canonical order by
(timestamp, id) with sequence gaps waiting, timed events on the canonical clock).

``extend`` is the fast path for the common case of records arriving roughly in time order: when
every new record sorts after the last one applied and none of them conflicts, applying them to
the existing state is exactly what a full replay would do (every event due before them has
fired, and nothing they schedule can be due earlier). Otherwise the caller replays from scratch.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.crypto.keys import address_from_public_key
from app.node.economics import handlers, settlement
from app.node.economics.constants import EconomicsConfig
from app.node.economics.records import SEQUENCED_KINDS, Record
from app.node.economics.state import LedgerState, find_conflicts, slots

CONFLICT_REASON = "double spend: another record by this author uses the same sequence number or slot"


def _key(record: Record) -> tuple[int, str]:
    return (record.timestamp_ms, record.record_id)


def compute_state(records: Iterable[Record], config: EconomicsConfig) -> LedgerState:
    """Applies ``records`` (signatures already checked) in canonical order; pure and deterministic."""
    ordered = sorted(records, key=_key)
    state = LedgerState(config=config)
    state.conflicting, state.flagged_since = find_conflicts(ordered, state.slot_owner)
    for author in state.flagged_since:
        state.account(address_from_public_key(author)).flagged = True
    _apply_ordered(state, ordered)
    return state


def extend(state: LedgerState, records: Iterable[Record]) -> bool:
    """Appends ``records`` to ``state`` if that equals a full replay; False (state untouched) if not."""
    ordered = sorted(records, key=_key)
    if not ordered:
        return True
    if _key(ordered[0]) <= state.last_key:
        return False
    claimed = [slot for record in ordered for slot in slots(record)]
    if len(set(claimed)) != len(claimed) or any(slot in state.slot_owner for slot in claimed):
        return False
    for record in ordered:
        for slot in slots(record):
            state.slot_owner[slot] = record.record_id
    _apply_ordered(state, ordered)
    return True


def _apply_ordered(state: LedgerState, ordered: list[Record]) -> None:
    for record in ordered:
        settlement.run_events(state, record.timestamp_ms)
        state.clock_ms = max(state.clock_ms, record.timestamp_ms)
        state.last_key = _key(record)
        rid = record.record_id
        if rid in state.conflicting:
            state.statuses[rid] = ("conflict", CONFLICT_REASON)
        elif record.kind in SEQUENCED_KINDS:
            _apply_sequenced(state, record)
        elif record.timestamp_ms >= state.flagged_since.get(record.author, record.timestamp_ms + 1):
            state.statuses[rid] = ("rejected", "author is flagged for a double spend")
        else:
            handlers.apply_record(state, record, record.timestamp_ms)
    settlement.run_events(state, state.clock_ms)
    for record in state.waiting.values():
        state.statuses[record.record_id] = ("waiting", "an earlier sequence number of this account is missing")


def _apply_sequenced(state: LedgerState, record: Record) -> None:
    """Applies a spending record in sequence order; later sequence numbers wait for the gap."""
    account = state.account(address_from_public_key(record.author))
    if record.seq > account.next_seq:
        state.waiting[(record.author, record.seq)] = record
        return
    if record.seq < account.next_seq:
        state.statuses[record.record_id] = ("rejected", "sequence number already used")
        return
    handlers.apply_record(state, record, record.timestamp_ms)
    account.next_seq += 1
    while (record.author, account.next_seq) in state.waiting:
        later = state.waiting.pop((record.author, account.next_seq))
        handlers.apply_record(state, later, max(later.timestamp_ms, state.clock_ms))
        account.next_seq += 1
