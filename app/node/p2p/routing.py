"""Kademlia routing (Maymounkov & Mazieres, 2002): XOR metric, k-buckets, iterative lookups.

Pure logic with no sockets: the live DHT (dht.py) and the 10,000-node simulation
(benchmarks/dht_sim.py) share this code, so the hop counts the simulation shows are the ones the
real network gets. Contacts are any objects, keyed by their 32-byte (256-bit) node id.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.node.p2p.aio import cancel_and_wait

C = TypeVar("C")
ID_BITS = 256
ID_BYTES = ID_BITS // 8


def distance(a: bytes, b: bytes) -> int:
    """The XOR metric on 256-bit ids."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


class RoutingTable(Generic[C]):
    """256 k-buckets; bucket i holds contacts at distance [2^i, 2^(i+1)) from us.

    Inside a bucket contacts are ordered least-recently-seen first. A full bucket does not take
    a newcomer outright: :meth:`add` parks it in a replacement cache and returns the oldest
    contact so the caller pings it; only if that ping fails is the oldest evicted (:meth:`remove`),
    which promotes the newest replacement. Long-lived nodes are thus preferred, as in the paper.
    """

    def __init__(self, own_id: bytes, k: int = 20) -> None:
        if len(own_id) != ID_BYTES:
            raise ValueError("node ids are 32 bytes")
        self.own_id = own_id
        self.k = k
        self._own = int.from_bytes(own_id, "big")
        self._buckets: list[OrderedDict[bytes, C]] = [OrderedDict() for _ in range(ID_BITS)]
        self._spare: list[OrderedDict[bytes, C]] = [OrderedDict() for _ in range(ID_BITS)]

    def bucket_index(self, node_id: bytes) -> int:
        return (self._own ^ int.from_bytes(node_id, "big")).bit_length() - 1

    def add(self, node_id: bytes, contact: C) -> bytes | None:
        """Insert or refresh; returns the id to ping when the bucket is full, else None."""
        if node_id == self.own_id:
            return None
        index = self.bucket_index(node_id)
        bucket = self._buckets[index]
        if node_id in bucket:
            bucket[node_id] = contact
            bucket.move_to_end(node_id)
            return None
        if len(bucket) < self.k:
            bucket[node_id] = contact
            return None
        spare = self._spare[index]
        spare[node_id] = contact
        spare.move_to_end(node_id)
        if len(spare) > self.k:
            spare.popitem(last=False)
        return next(iter(bucket))

    def touch(self, node_id: bytes) -> None:
        """Mark as seen just now (it answered): moves it to the tail of its bucket."""
        if node_id != self.own_id:
            bucket = self._buckets[self.bucket_index(node_id)]
            if node_id in bucket:
                bucket.move_to_end(node_id)

    def remove(self, node_id: bytes) -> None:
        """Evict a dead contact and promote the most recently seen replacement."""
        if node_id == self.own_id:
            return
        index = self.bucket_index(node_id)
        self._spare[index].pop(node_id, None)
        if self._buckets[index].pop(node_id, None) is not None and self._spare[index]:
            new_id, contact = self._spare[index].popitem(last=True)
            self._buckets[index][new_id] = contact

    def get(self, node_id: bytes) -> C | None:
        if node_id == self.own_id:
            return None
        return self._buckets[self.bucket_index(node_id)].get(node_id)

    def nearest(self, target: bytes, count: int) -> list[tuple[bytes, C]]:
        """The ``count`` known contacts closest to ``target`` by XOR, closest first."""
        t = int.from_bytes(target, "big")
        items = [item for bucket in self._buckets for item in bucket.items()]
        items.sort(key=lambda item: int.from_bytes(item[0], "big") ^ t)
        return items[:count]

    def contacts(self) -> list[tuple[bytes, C]]:
        return [item for bucket in self._buckets for item in bucket.items()]

    def non_empty_buckets(self) -> list[int]:
        return [i for i, b in enumerate(self._buckets) if b]

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)


@dataclass
class Answer(Generic[C]):
    """What one queried node returned: closer contacts and, for find_value, values."""

    contacts: Sequence[tuple[bytes, C]]
    values: Sequence[Any] = ()


@dataclass
class LookupResult(Generic[C]):
    closest: list[tuple[bytes, C]]
    values: list[Any] = field(default_factory=list)
    hops: int = 0
    queried: int = 0
    failed: list[bytes] = field(default_factory=list)


Query = Callable[[bytes, C], Awaitable[Answer[C]]]


class _Lookup(Generic[C]):
    """State of one iterative lookup: contacts seen, their depth, who answered or failed."""

    def __init__(self, target: bytes, own_id: bytes, initial: Sequence[tuple[bytes, C]], k: int) -> None:
        self.t = int.from_bytes(target, "big")
        self.own_id, self.k = own_id, k
        self.depth: dict[bytes, int] = {}
        self.contacts: dict[bytes, C] = {}
        self.queried: set[bytes] = set()
        self.answered: set[bytes] = set()
        self.failed: list[bytes] = []
        self.result: LookupResult[C] = LookupResult(closest=[])
        self.holders = 0
        for node_id, c in initial:
            if node_id != own_id:
                self.depth[node_id], self.contacts[node_id] = 1, c

    def ranked(self, only_answered: bool = False) -> list[bytes]:
        pool = (n for n in self.contacts if n in self.answered) if only_answered else iter(self.contacts)
        return sorted(pool, key=lambda n: int.from_bytes(n, "big") ^ self.t)[: self.k]

    def take(self, node_id: bytes, outcome: asyncio.Task[Answer[C]]) -> None:
        try:
            answer = outcome.result()
        except Exception:  # any failure of a peer just removes it from this lookup
            self.failed.append(node_id)
            self.contacts.pop(node_id, None)
            return
        self.answered.add(node_id)
        if answer.values:
            if not self.result.values:
                self.result.hops = self.depth[node_id]
            self.result.values.extend(answer.values)
            self.holders += 1
        for new_id, c in answer.contacts:
            if new_id != self.own_id and new_id not in self.contacts and new_id not in self.failed:
                self.depth[new_id], self.contacts[new_id] = self.depth[node_id] + 1, c

    def finish(self) -> LookupResult[C]:
        live = self.ranked(only_answered=True)
        self.result.closest = [(n, self.contacts[n]) for n in live]
        if not self.result.values and live:
            self.result.hops = self.depth[live[0]]
        self.result.queried, self.result.failed = len(self.queried), self.failed
        return self.result


async def iterative_lookup(target: bytes, own_id: bytes, initial: Sequence[tuple[bytes, C]], query: Query,
                           *, k: int = 20, alpha: int = 3, want_values: int = 0) -> LookupResult[C]:
    """Kademlia node/value lookup with ``alpha`` queries in flight.

    Ends when the ``k`` closest live contacts seen have all answered, or (value lookups) when
    ``want_values`` nodes returned values. ``hops`` is the length of the chain of queries that
    led to the closest contact (or the first value holder): contacts from our own table are one
    hop away, a contact learned from a node at depth d is at depth d + 1.
    """
    state: _Lookup[C] = _Lookup(target, own_id, initial, k)
    inflight: dict[asyncio.Task[Answer[C]], bytes] = {}
    try:
        while True:
            pending = [n for n in state.ranked() if n not in state.queried]
            if (want_values and state.holders >= want_values) or (not pending and not inflight):
                break
            for node_id in pending[: max(0, alpha - len(inflight))]:
                state.queried.add(node_id)
                inflight[asyncio.ensure_future(query(node_id, state.contacts[node_id]))] = node_id
            done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                state.take(inflight.pop(task), task)
    finally:
        await cancel_and_wait(inflight)
    return state.finish()
