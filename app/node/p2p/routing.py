"""Kademlia routing (Maymounkov & Mazieres, 2002): XOR metric, k-buckets, iterative lookups.

Pure logic with no sockets: the live DHT (dht.py) and the 10,000-node simulation
(benchmarks/dht_sim.py) share this code, so the hop counts the simulation shows are the ones the
real network gets. Contacts are any objects, keyed by their 32-byte (256-bit) node id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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


async def iterative_lookup(target: bytes, own_id: bytes, initial: Sequence[tuple[bytes, C]], query: Query,
                           *, k: int = 20, alpha: int = 3, want_values: int = 0) -> LookupResult[C]:
    """Kademlia node/value lookup with ``alpha`` queries in flight.

    Ends when the ``k`` closest live contacts seen have all answered, or (value lookups) when
    ``want_values`` nodes returned values. ``hops`` is the length of the chain of queries that
    led to the closest contact (or the first value holder): contacts from our own table are one
    hop away, a contact learned from a node at depth d is at depth d + 1.
    """
    t = int.from_bytes(target, "big")
    depth: dict[bytes, int] = {}
    contacts: dict[bytes, C] = {}
    for node_id, c in initial:
        if node_id != own_id:
            depth[node_id], contacts[node_id] = 1, c
    queried: set[bytes] = set()
    failed: list[bytes] = []
    answered: set[bytes] = set()
    inflight: dict[asyncio.Task[Answer[C]], bytes] = {}
    result: LookupResult[C] = LookupResult(closest=[])
    holders = 0
    try:
        while True:
            ranked = sorted(contacts, key=lambda n: int.from_bytes(n, "big") ^ t)[:k]
            pending = [n for n in ranked if n not in queried]
            if (want_values and holders >= want_values) or (not pending and not inflight):
                break
            while pending and len(inflight) < alpha:
                node_id = pending.pop(0)
                queried.add(node_id)
                inflight[asyncio.ensure_future(query(node_id, contacts[node_id]))] = node_id
            done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                node_id = inflight.pop(task)
                try:
                    answer = task.result()
                except Exception:  # any failure of a peer just removes it from this lookup
                    failed.append(node_id)
                    contacts.pop(node_id, None)
                    continue
                answered.add(node_id)
                if answer.values:
                    if not result.values:
                        result.hops = depth[node_id]
                    result.values.extend(answer.values)
                    holders += 1
                for new_id, c in answer.contacts:
                    if new_id != own_id and new_id not in contacts and new_id not in failed:
                        depth[new_id], contacts[new_id] = depth[node_id] + 1, c
    finally:
        for task in inflight:
            task.cancel()
        for task in inflight:
            with contextlib.suppress(BaseException):
                await task
    live = sorted((n for n in contacts if n in answered), key=lambda n: int.from_bytes(n, "big") ^ t)[:k]
    result.closest = [(n, contacts[n]) for n in live]
    if not result.values and live:
        result.hops = depth[live[0]]
    result.queried, result.failed = len(queried), failed
    return result
