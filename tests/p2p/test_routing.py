import asyncio
import hashlib
import math
import os

from app.node.p2p.routing import Answer, RoutingTable, distance, iterative_lookup


def _id_at_bucket(own: bytes, bucket: int, salt: int) -> bytes:
    """An id whose XOR distance from ``own`` has its top bit at ``bucket``."""
    value = int.from_bytes(own, "big") ^ (1 << bucket) ^ (salt % (1 << max(bucket - 1, 0)))
    return value.to_bytes(32, "big")


def test_full_bucket_returns_least_recently_seen_for_a_ping_and_keeps_it_if_alive():
    own = os.urandom(32)
    table: RoutingTable[str] = RoutingTable(own, k=3)
    ids = [_id_at_bucket(own, 200, salt) for salt in range(1, 6)]
    for node_id in ids[:3]:
        assert table.add(node_id, "c") is None
    assert table.add(ids[3], "new") == ids[0]  # full: ping the oldest before evicting it
    table.touch(ids[0])  # it answered: stays, moves to the tail
    assert table.add(ids[4], "newer") == ids[1]
    assert {n for n, _ in table.contacts()} == set(ids[:3])


def test_evicting_a_dead_contact_promotes_the_newest_replacement():
    own = os.urandom(32)
    table: RoutingTable[str] = RoutingTable(own, k=2)
    ids = [_id_at_bucket(own, 100, salt) for salt in range(1, 5)]
    for node_id in ids:
        table.add(node_id, "c")
    table.remove(ids[0])
    assert {n for n, _ in table.contacts()} == {ids[1], ids[3]}


def test_nearest_is_sorted_by_xor_distance():
    own = os.urandom(32)
    table: RoutingTable[int] = RoutingTable(own, k=20)
    for i in range(300):
        table.add(hashlib.sha256(bytes([i % 256, i // 256])).digest(), i)
    target = os.urandom(32)
    got = [distance(n, target) for n, _ in table.nearest(target, 20)]
    assert got == sorted(got) and len(got) == 20
    everything = sorted(distance(n, target) for n, _ in table.contacts())
    assert got == everything[:20]


def _network(n: int, k: int) -> dict[bytes, RoutingTable[None]]:
    ids = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]
    tables = {i: RoutingTable(i, k) for i in ids}
    for table in tables.values():  # every node has heard of everyone: buckets keep k each
        for other in ids:
            table.add(other, None)
    return tables


def test_iterative_lookup_finds_the_target_in_about_log2_n_hops():
    n, k = 500, 8
    tables = _network(n, k)
    start = next(iter(tables))

    async def query(node_id: bytes, _: None, target: bytes) -> Answer[None]:
        return Answer(tables[node_id].nearest(target, k))

    async def lookup(target: bytes):
        return await iterative_lookup(target, start, tables[start].nearest(target, k),
                                      lambda n_, c: query(n_, c, target), k=k, alpha=3)

    targets = list(tables)[1::50]
    results = [asyncio.run(lookup(t)) for t in targets]
    assert all(r.closest[0][0] == t for r, t in zip(results, targets, strict=True))
    assert max(r.hops for r in results) <= math.ceil(math.log2(n))


def test_lookup_routes_around_failing_nodes():
    n, k = 200, 8
    tables = _network(n, k)
    dead = set(list(tables)[1::5])
    start = next(iter(tables))
    target = next(t for t in list(tables)[2:] if t not in dead)

    async def query(node_id: bytes, _: None) -> Answer[None]:
        if node_id in dead:
            raise ConnectionError("down")
        return Answer(tables[node_id].nearest(target, k))

    result = asyncio.run(iterative_lookup(target, start, tables[start].nearest(target, k), query, k=k, alpha=3))
    assert result.closest[0][0] == target
    assert not any(n_ in dead for n_, _ in result.closest)


def test_value_store_refuses_values_beyond_its_byte_budget_and_frees_them_at_expiry():
    from app.crypto.keys import PrivateKey
    from app.node.p2p.dht import ValueStore
    from app.node.p2p.records import sign_value

    store = ValueStore(max_keys=100, max_per_key=10, max_ttl_s=3600, max_bytes=3000)
    key = PrivateKey.generate()
    values = [sign_value(key, os.urandom(32), b"x" * 1000, ttl=60) for _ in range(3)]
    assert store.put(values[0]) and store.put(values[1])
    assert not store.put(values[2])  # would pass 3000 bytes
    store.expire(now=values[0].expires + 1)
    assert store.bytes == 0 and len(store) == 0
    assert store.put(values[2], now=values[2].timestamp)
