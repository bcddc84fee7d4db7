"""Fetch missing shards from data nodes, refusing any that do not match the signed manifest.

Transport-agnostic (app/node/data never imports p2p): the caller passes ``fetch(peer, shard_id)``,
an async callable that returns the bytes a peer sent (or None), e.g. a closure over
``P2PNode.fetch_data``. A peer that sends a bad shard is reported, skipped for the rest of the
call, and the shard is asked of the next peer. The report says which peer served which verified
shard and how many samples that is (``served``): what the receiver signs receipts for, so data
nodes are paid from what their receivers confirm (runtime/data_receipts.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from app.node.data.manifest import BadShard
from app.node.data.store import ShardStore

Peer = TypeVar("Peer")

TOKENS_PER_SAMPLE = 256
"""A sample is one training window of the default sequence length (training.seq_len 256): the
unit data receipts count, so a shard of N tokens is N // 256 samples (at least 1)."""


def samples_in(tokens: int) -> int:
    """Samples a shard of ``tokens`` genesis tokens holds (the unit of data receipts)."""
    return max(1, tokens // TOKENS_PER_SAMPLE)


@dataclass
class FetchReport(Generic[Peer]):
    """What a fetch round did: shards stored, which peer served each (with its samples), peers
    refused (with why), shards still missing."""

    fetched: list[str] = field(default_factory=list)
    served: list[tuple[Peer, str, int]] = field(default_factory=list)
    refused: list[tuple[Peer, str, str]] = field(default_factory=list)
    failed: list[tuple[Peer, str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    bytes_received: int = 0


async def fetch_missing(store: ShardStore, shard_ids: Sequence[str], peers: Sequence[Peer],
                        fetch: Callable[[Peer, str], Awaitable[bytes | None]]) -> FetchReport[Peer]:
    """Try each missing shard on each peer in turn until one verifies.

    Errors raised by ``fetch`` (timeouts, unavailable peers) are recorded in ``failed`` and the
    next peer is tried; a shard whose bytes fail verification is recorded in ``refused`` and
    that peer is not asked again in this call.
    """
    report: FetchReport[Peer] = FetchReport()
    distrusted: set[int] = set()
    for shard_id in store.missing(list(shard_ids)):
        for i, peer in enumerate(peers):
            if i in distrusted:
                continue
            try:
                data = await fetch(peer, shard_id)
            except Exception as exc:  # any transport error: try the next peer
                report.failed.append((peer, shard_id, f"{type(exc).__name__}: {exc}"))
                continue
            if data is None:
                continue
            report.bytes_received += len(data)
            try:
                store.put(shard_id, data)
            except BadShard as exc:
                report.refused.append((peer, shard_id, str(exc)))
                distrusted.add(i)
                continue
            report.fetched.append(shard_id)
            report.served.append((peer, shard_id, samples_in(store.manifest.shard(shard_id).tokens)))
            break
        else:
            report.missing.append(shard_id)
    return report
