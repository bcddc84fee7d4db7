"""Ledger records spread by push-pull gossip on the P2P layer's ``ledger`` topic.

Each round the node sends a random peer the records it has not sent that peer yet, together with
the cursor of that peer's records it has already seen; the peer stores what it lacks and answers
with its own records after that cursor. Because balances are a pure function of the record set,
nodes that have exchanged everything agree on ``state_hash``. Every batch a peer sends is untrusted:
a header that is not exactly ``{"v": 1, "cursor": <int >= 0>}`` drops the whole batch, and each
record is checked by the ledger itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app.node.economics.ledger import Ledger

log = logging.getLogger("neuroshard.economy")
GOSSIP_TOPIC = "ledger"
GOSSIP_BATCH = 500
GOSSIP_TIMEOUT_S = 5.0
GossipSend = Callable[[Any, list[bytes]], Awaitable[list[bytes]]]


class LedgerGossip:
    """One node's side of ledger gossip: what it pushed to and pulled from each peer so far."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._sent_cursor: dict[str, int] = {}  # peer id -> our cursor already pushed to it
        self._seen_cursor: dict[str, int] = {}  # peer id -> their cursor we already pulled

    async def round(self, peer: Any, send: GossipSend) -> int:
        """Push what ``peer`` has not had from us, pull what we have not had from it; returns new records."""
        peer_id = getattr(peer, "node_id", str(peer))
        peer_id = peer_id.hex() if isinstance(peer_id, bytes) else str(peer_id)
        loop = asyncio.get_running_loop()
        records, our_cursor = await loop.run_in_executor(
            None, self._ledger.records_since, self._sent_cursor.get(peer_id, 0), GOSSIP_BATCH)
        header = json.dumps({"v": 1, "cursor": self._seen_cursor.get(peer_id, 0)}).encode()
        try:
            reply = await send(peer, [header, *records])
        except Exception as exc:  # peers come and go; the next round picks another
            log.debug("ledger gossip with %s failed: %s", peer_id[:12], exc)
            return 0
        self._sent_cursor[peer_id] = our_cursor
        cursor, incoming = parse_batch(reply)
        if cursor is None:
            return 0
        self._seen_cursor[peer_id] = cursor
        results = await loop.run_in_executor(None, self._ledger.submit_many, incoming)
        return sum(r.accepted for r in results)

    async def serve(self, payloads: list[bytes]) -> list[bytes]:
        """Server side of ``round``: store what came, answer with records after their cursor."""
        cursor, incoming = parse_batch(payloads)
        if cursor is None:
            return []
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._ledger.submit_many, incoming)
        records, next_cursor = await loop.run_in_executor(None, self._ledger.records_since, cursor, GOSSIP_BATCH)
        return [json.dumps({"v": 1, "cursor": next_cursor}).encode(), *records]


def parse_batch(payloads: list[bytes]) -> tuple[int | None, list[bytes]]:
    """A gossip batch: a JSON header with a cursor, then raw records. Anything else is dropped."""
    if not payloads:
        return None, []
    try:
        header = json.loads(payloads[0])
        cursor = header["cursor"]
    except (ValueError, KeyError, TypeError):
        return None, []
    if header.get("v") != 1 or not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < 0:
        return None, []
    return cursor, list(payloads[1:])
