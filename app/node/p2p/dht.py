"""The live Kademlia DHT of one node: routing table, value store, lookups, republish.

Sockets live elsewhere: a :class:`DhtTransport` (implemented by node.py over gRPC) carries the
four RPCs, so this module holds only the protocol logic. Values are :class:`SignedValue` records:
a node keeps one per (key, publisher), refuses any whose signature does not match the publisher
inside it, and drops them at expiry. Publishers republish their own values every
``republish_interval_s`` (a third of the TTL by default), so values survive churn of the nodes
that stored them (Kademlia paper §2.5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from app.crypto.keys import PrivateKey
from app.node.p2p.aio import cancel_and_wait
from app.node.p2p.config import P2PConfig
from app.node.p2p.records import InvalidRecord, PeerRecord, SignedValue, parse_value, sign_value
from app.node.p2p.routing import Answer, LookupResult, RoutingTable, iterative_lookup

T = TypeVar("T")

log = logging.getLogger(__name__)


class DhtTransport(Protocol):
    async def ping(self, contact: PeerRecord) -> PeerRecord: ...
    async def find_node(self, contact: PeerRecord, target: bytes) -> list[PeerRecord]: ...
    async def find_value(self, contact: PeerRecord, key: bytes) -> tuple[list[SignedValue], list[PeerRecord]]: ...
    async def store(self, contact: PeerRecord, value: SignedValue) -> bool: ...


class ValueStore:
    """Values held for the network, bounded in keys, publishers per key and total bytes: a peer
    storing garbage can fill the budget, not the node's memory."""

    def __init__(self, max_keys: int, max_per_key: int, max_ttl_s: float, max_bytes: int = 64 << 20) -> None:
        self._data: dict[bytes, dict[bytes, SignedValue]] = {}
        self.max_keys, self.max_per_key, self.max_ttl_s = max_keys, max_per_key, max_ttl_s
        self.max_bytes = max_bytes
        self.bytes = 0

    def put(self, value: SignedValue, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if value.expires <= now or value.timestamp > now + 60:
            return False
        if value.expires - value.timestamp > self.max_ttl_s * 1.01:
            raise InvalidRecord(f"DHT value TTL exceeds the {self.max_ttl_s:.0f} s limit")
        slot = self._data.get(value.key)
        if slot is None:
            if len(self._data) >= self.max_keys:
                return False
            slot = self._data[value.key] = {}
        old = slot.get(value.publisher)
        if old is not None and old.timestamp >= value.timestamp:
            return old.raw == value.raw
        if old is None and len(slot) >= self.max_per_key:
            return False
        grown = len(value.raw) - (len(old.raw) if old is not None else 0)
        if self.bytes + grown > self.max_bytes:
            return False
        slot[value.publisher] = value
        self.bytes += grown
        return True

    def get(self, key: bytes, now: float | None = None) -> list[SignedValue]:
        now = time.time() if now is None else now
        return [v for v in self._data.get(key, {}).values() if v.expires > now]

    def expire(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for key in list(self._data):
            slot = {p: v for p, v in self._data[key].items() if v.expires > now}
            self.bytes -= sum(len(v.raw) for v in self._data[key].values()) - sum(len(v.raw) for v in slot.values())
            if slot:
                self._data[key] = slot
            else:
                del self._data[key]

    def __len__(self) -> int:
        return sum(len(s) for s in self._data.values())


class KademliaNode:
    """One node's view of the DHT; ``.store`` / ``.get`` are the public API (see node.py)."""

    def __init__(self, key: PrivateKey, transport: DhtTransport, config: P2PConfig,
                 on_lookup: Callable[[LookupResult[PeerRecord]], None] | None = None) -> None:
        self.key = key
        self.node_id = key.node_id
        self.config = config
        self.transport = transport
        self.table: RoutingTable[PeerRecord] = RoutingTable(self.node_id, config.k)
        self.values = ValueStore(config.max_stored_keys, config.max_values_per_key,
                                 max(config.value_ttl_s, 86400), config.max_store_bytes)
        self._published: dict[bytes, tuple[bytes, float]] = {}
        self._seen: dict[bytes, float] = {}  # node id -> monotonic time it last answered us
        self._pinging: set[bytes] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        self.on_lookup = on_lookup
        self.last_lookup: LookupResult[PeerRecord] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._maintenance = asyncio.ensure_future(self._maintain())

    async def stop(self) -> None:
        tasks = [t for t in (self._maintenance, *self._tasks) if t is not None]
        await cancel_and_wait(tasks)

    async def bootstrap(self, records: list[PeerRecord]) -> int:
        """Join through ``records`` (from a tracker or a cache): a lookup of our own id fills the
        buckets near us, and the answers teach others about us. Returns the table size."""
        for record in records:
            if record.node_id != self.node_id:
                self.table.add(record.node_id, record)
        if len(self.table):
            await self.find_node(self.node_id)
        return len(self.table)

    # ------------------------------------------------------------------ routing table upkeep
    def observe(self, record: PeerRecord) -> None:
        """A verified contact talked to us or was returned by a peer: learn it."""
        if record.node_id == self.node_id:
            return
        known = self.table.get(record.node_id)
        if known is not None and known.timestamp > record.timestamp:
            record = known  # an old copy of the record circulating: keep the newer one
        oldest = self.table.add(record.node_id, record)
        if oldest is None or oldest in self._pinging or len(self._pinging) >= 64:
            return
        if time.monotonic() - self._seen.get(oldest, -1e9) < self.config.contact_fresh_s:
            return  # it answered recently: alive, keep it (the newcomer waits in the replacements)
        self._pinging.add(oldest)
        self._spawn(self._ping_or_evict(oldest))

    def _alive(self, node_id: bytes) -> None:
        self.table.touch(node_id)
        self._seen[node_id] = time.monotonic()

    def _dead(self, node_id: bytes) -> None:
        self.table.remove(node_id)
        self._seen.pop(node_id, None)

    async def _ping_or_evict(self, node_id: bytes) -> None:
        try:
            contact = self.table.get(node_id)
            if contact is not None:
                await self.transport.ping(contact)
                self._alive(node_id)
        except Exception:  # unreachable: evict, the newest replacement takes its place
            self._dead(node_id)
        finally:
            self._pinging.discard(node_id)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ lookups
    async def _ask(self, node_id: bytes, call: Awaitable[T]) -> T:
        """Await one query to a contact, marking it dead on failure and alive on an answer."""
        try:
            answer = await call
        except Exception:
            self._dead(node_id)
            raise
        self._alive(node_id)
        return answer

    def _observe_all(self, found: list[PeerRecord]) -> list[tuple[bytes, PeerRecord]]:
        for record in found:
            self.observe(record)
        return [(r.node_id, r) for r in found]

    async def _query_nodes(self, node_id: bytes, contact: PeerRecord, target: bytes) -> Answer[PeerRecord]:
        found = await self._ask(node_id, self.transport.find_node(contact, target))
        return Answer(self._observe_all(found))

    async def _query_values(self, node_id: bytes, contact: PeerRecord, key: bytes) -> Answer[PeerRecord]:
        values, found = await self._ask(node_id, self.transport.find_value(contact, key))
        return Answer(self._observe_all(found), [v for v in values if v.key == key])

    def _finish(self, result: LookupResult[PeerRecord]) -> LookupResult[PeerRecord]:
        self.last_lookup = result
        if self.on_lookup is not None:
            self.on_lookup(result)
        return result

    async def find_node(self, target: bytes) -> LookupResult[PeerRecord]:
        initial = self.table.nearest(target, self.config.k)
        result = await iterative_lookup(
            target, self.node_id, initial, lambda n, c: self._query_nodes(n, c, target),
            k=self.config.k, alpha=self.config.alpha)
        return self._finish(result)

    async def get_values(self, key: bytes, want: int = 3) -> list[SignedValue]:
        """Every live value under ``key``, newest per publisher, from us and ``want`` holders."""
        initial = self.table.nearest(key, self.config.k)
        result = await iterative_lookup(
            key, self.node_id, initial, lambda n, c: self._query_values(n, c, key),
            k=self.config.k, alpha=self.config.alpha, want_values=want)
        self._finish(result)
        newest: dict[bytes, SignedValue] = {}
        now = time.time()
        for value in [*self.values.get(key), *result.values]:
            old = newest.get(value.publisher)
            if value.expires > now and (old is None or value.timestamp > old.timestamp):
                newest[value.publisher] = value
        return list(newest.values())

    async def get(self, key: bytes) -> list[bytes]:
        """The payloads stored under ``key`` (one per publisher); an empty list if none."""
        return [v.value for v in await self.get_values(key)]

    async def store(self, key: bytes, value: bytes, ttl: float | None = None) -> int:
        """Sign ``value`` as ours and store it on the k nodes closest to ``key`` (and here).
        Returns how many remote nodes accepted it; it is republished until ``ttl`` runs out."""
        ttl = self.config.value_ttl_s if ttl is None else ttl
        self._published[key] = (value, ttl)
        return await self._publish(key, value, ttl)

    async def _publish(self, key: bytes, value: bytes, ttl: float) -> int:
        signed = sign_value(self.key, key, value, ttl)
        self.values.put(signed)
        closest = (await self.find_node(key)).closest
        results = await asyncio.gather(*(self.transport.store(c, signed) for _, c in closest),
                                       return_exceptions=True)
        return sum(1 for r in results if r is True)

    # ------------------------------------------------------------------ serving
    def closest_records(self, target: bytes, exclude: bytes | None = None) -> list[bytes]:
        return [c.raw for n, c in self.table.nearest(target, self.config.k + 1) if n != exclude][: self.config.k]

    def handle_find_value(self, key: bytes, sender: bytes | None) -> tuple[list[bytes], list[bytes]]:
        return [v.raw for v in self.values.get(key)], self.closest_records(key, sender)

    def handle_store(self, raw: bytes) -> bool:
        return self.values.put(parse_value(raw))

    # ------------------------------------------------------------------ maintenance
    async def _maintain(self) -> None:
        interval = min(self.config.republish_interval_s, self.config.refresh_interval_s) / 4
        last_republish = last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(max(interval, 0.05))
            self.values.expire()
            now = time.monotonic()
            if now - last_republish >= self.config.republish_interval_s:
                last_republish = now
                for key, (value, ttl) in list(self._published.items()):
                    with contextlib.suppress(Exception):
                        await self._publish(key, value, ttl)
            if now - last_refresh >= self.config.refresh_interval_s and len(self.table):
                last_refresh = now
                with contextlib.suppress(Exception):
                    await self.find_node(os.urandom(32))
