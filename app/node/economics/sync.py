"""Anti-entropy pull between two ledgers, the protocol the gossip RPC carries.

A node remembers, per peer, the cursor up to which it has pulled that peer's records; each round
it asks ``records_since(cursor)`` and submits the page to its own ledger. Record ids are content
hashes, so pulling the same record twice is a harmless duplicate, and because balances depend
only on the set of records, any schedule of pulls that eventually moves every record everywhere
leaves every node with the same ``state_hash``. Over the network the P2P layer calls the same two
methods through gRPC; in one process (tests, the benchmark) ``pull`` calls them directly.
"""

from __future__ import annotations

from typing import Protocol


class RecordSource(Protocol):
    def records_since(self, cursor: int, limit: int = 500) -> tuple[list[bytes], int]: ...


class RecordSink(Protocol):
    def submit_many(self, raws: list[bytes], now_ms: int | None = None) -> list: ...


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
        accepted += sum(1 for r in results if r.status != "duplicate")
        cursor = next_cursor
