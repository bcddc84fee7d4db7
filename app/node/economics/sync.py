"""Anti-entropy pull between two ledgers, the protocol the gossip RPC carries.

A node remembers, per peer, the cursor up to which it has pulled that peer's records; each round
it asks ``records_since(cursor)`` and submits the page to its own ledger. Record ids are content
hashes, so pulling the same record twice is a harmless duplicate, and because balances depend
only on the set of records, any schedule of pulls that eventually moves every record everywhere
leaves every node with the same ``state_hash``. Over the network the P2P layer calls the same two
methods through gRPC; in one process (tests, the benchmark) ``pull`` calls them directly.

Where bandwidth matters more than round trips, ``pull_inventory`` first fetches only ids
(``record_ids_since``, 64 bytes each), keeps those the sink lacks (``have``) and fetches just
those (``get_records``).
"""

from __future__ import annotations

from typing import Protocol


class RecordSource(Protocol):
    def records_since(self, cursor: int, limit: int = 500) -> tuple[list[bytes], int]: ...


class InventorySource(Protocol):
    def record_ids_since(self, cursor: int, limit: int = 500) -> tuple[list[str], int]: ...

    def get_records(self, record_ids: list[str]) -> list[bytes]: ...


class RecordSink(Protocol):
    def submit_many(self, raws: list[bytes], now_ms: int | None = None) -> list: ...

    def have(self, record_ids: list[str]) -> set[str]: ...


def pull(source: RecordSource, sink: RecordSink, cursor: int, page: int = 500,
         now_ms: int | None = None) -> tuple[int, int]:
    """Copies every record ``source`` stored after ``cursor`` into ``sink``.

    Returns (new cursor, number of records newly accepted by the sink).
    """
    accepted = 0
    while True:
        raws, next_cursor = source.records_since(cursor, page)
        if not raws:
            return cursor, accepted
        results = sink.submit_many(raws, now_ms)
        accepted += sum(1 for r in results if r.status == "accepted")
        cursor = next_cursor


def pull_inventory(source: InventorySource, sink: RecordSink, cursor: int, page: int = 500,
                   now_ms: int | None = None) -> tuple[int, int]:
    """Like ``pull``, but moves only the records the sink does not hold yet."""
    accepted = 0
    while True:
        ids, next_cursor = source.record_ids_since(cursor, page)
        if not ids:
            return cursor, accepted
        held = sink.have(ids)
        missing = [rid for rid in ids if rid not in held]
        if missing:
            results = sink.submit_many(source.get_records(missing), now_ms)
            accepted += sum(1 for r in results if r.status == "accepted")
        cursor = next_cursor
