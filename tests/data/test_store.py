from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.node.data.manifest import BadShard
from app.node.data.store import ShardStore
from app.node.data.sync import fetch_missing, samples_in


def test_get_returns_verified_bytes(corpus):
    out, manifest = corpus
    store = ShardStore(out, manifest)
    first = manifest.shards[0]
    data = store.get(first.shard_id)
    assert len(data) == first.nbytes
    tokens = store.tokens(first.shard_id)
    assert tokens.dtype == np.uint16 and tokens.size == first.tokens


def test_put_refuses_a_shard_with_a_wrong_hash(corpus, tmp_path):
    out, manifest = corpus
    sid = manifest.shards[0].shard_id
    good = (out / manifest.shards[0].filename).read_bytes()
    bad = bytearray(good)
    bad[10] ^= 1
    store = ShardStore(tmp_path / "node", manifest)
    with pytest.raises(BadShard, match="SHA-256"):
        store.put(sid, bytes(bad))
    assert not store.has(sid)
    store.put(sid, good)
    assert store.has(sid) and store.get(sid) == good


def test_put_refuses_wrong_size_and_unknown_ids(corpus, tmp_path):
    out, manifest = corpus
    store = ShardStore(tmp_path / "node", manifest)
    with pytest.raises(BadShard, match="bytes"):
        store.put(manifest.shards[0].shard_id, b"\x00" * 4)
    with pytest.raises(BadShard, match="not a shard"):
        store.put("shard-99999", b"\x00" * 4)
    with pytest.raises(BadShard, match="not a shard"):
        store.put("../escape", b"")


def test_corrupted_shard_on_disk_is_refused_and_removed(corpus):
    out, manifest = corpus
    store = ShardStore(out, manifest)
    info = manifest.shards[1]
    path = out / info.filename
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BadShard):
        store.get(info.shard_id)
    assert not path.exists()
    assert store.missing() == [info.shard_id]
    assert store.serve(info.shard_id) is None


def test_serve_never_raises_on_peer_input(corpus):
    out, manifest = corpus
    store = ShardStore(out, manifest)
    for hostile in ("../../etc/passwd", "", None, 17, "shard-00000/../x"):
        assert store.serve(hostile) is None
    assert store.serve(manifest.shards[0].shard_id) == (out / manifest.shards[0].filename).read_bytes()


def test_fetch_missing_skips_a_lying_peer_and_takes_the_honest_copy(corpus, tmp_path):
    out, manifest = corpus
    source = ShardStore(out, manifest)
    target = ShardStore(tmp_path / "driver", manifest)
    calls: list[tuple[str, str]] = []

    async def fetch(peer: str, shard_id: str) -> bytes | None:
        calls.append((peer, shard_id))
        if peer == "liar":
            return b"\x01\x00" * manifest.shard(shard_id).tokens
        if peer == "down":
            raise ConnectionError("peer unavailable")
        return source.serve(shard_id)

    report = asyncio.run(fetch_missing(target, manifest.shard_ids, ["liar", "down", "honest"], fetch))
    assert report.fetched == manifest.shard_ids and report.missing == []
    assert [(p, s) for p, s, _ in report.refused] == [("liar", manifest.shard_ids[0])]
    assert ("liar", manifest.shard_ids[1]) not in calls
    # what each peer served, for the receiver's receipts: the honest copies only, never the refused one
    assert report.served == [("honest", s, samples_in(manifest.shard(s).tokens)) for s in manifest.shard_ids]
    assert all(target.get(s) == source.get(s) for s in manifest.shard_ids)
