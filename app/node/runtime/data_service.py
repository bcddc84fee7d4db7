"""DataService: the genesis corpus on this node — batches for a driver, shards for peers.

The bundled, signature-checked sample corpus (app/node/data/bundled.py) is installed into the
data dir; a driver reads batches from it through training-A's BatchLoader (each driver its own
seed, so two drivers do not train on the same order), and in data mode the node serves its
verified shards to peers. Shards a driver lacks are fetched from peers and verified against the
signed manifest (app/node/data/sync.py) before use.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from app.node.data.builder import PUBLIC_KEY_NAME
from app.node.data.bundled import open_bundled_store, open_corpus_store
from app.node.data.loader import BatchLoader
from app.node.data.manifest import DataError
from app.node.data.store import ShardStore
from app.node.data.sync import fetch_missing
from app.node.p2p.errors import P2PError
from app.node.p2p.node import P2PNode
from app.node.p2p.records import PeerRecord

log = logging.getLogger("neuroshard.runtime.data")


def seed_for(node_id: str, base: int = 0) -> int:
    """A per-node data order derived from its id: stable across restarts, different per node."""
    return (int(hashlib.sha256(node_id.encode()).hexdigest()[:12], 16) + base) % (1 << 62)


def _key_beside(corpus_dir: Path) -> str:
    """The public key the build wrote next to the shards."""
    try:
        return (corpus_dir / PUBLIC_KEY_NAME).read_text().strip()
    except OSError as exc:
        raise DataError(f"set training.genesis_public_key: no key beside the corpus in {corpus_dir} "
                        f"({exc.strerror})") from None


class DataService:
    def __init__(self, data_dir: Path, node_id: str, *, seed: int | None = None, corpus_dir: str = "",
                 genesis_public_key: str = "") -> None:
        self.data_dir = data_dir
        self.corpus_dir, self.genesis_public_key = corpus_dir, genesis_public_key
        self.node_id = node_id
        self.seed = seed_for(node_id, seed or 0)
        self.store: ShardStore | None = None
        self.loader: BatchLoader | None = None
        self.samples_served = 0

    async def open(self) -> ShardStore:
        loop = asyncio.get_running_loop()
        if self.corpus_dir:
            public_key = self.genesis_public_key or _key_beside(Path(self.corpus_dir))
            self.store = await loop.run_in_executor(None, open_corpus_store, self.data_dir, self.corpus_dir,
                                                    public_key)
        else:
            self.store = await loop.run_in_executor(None, open_bundled_store, self.data_dir)
        return self.store

    async def fetch_missing_from(self, node: P2PNode, peers: list[PeerRecord]) -> int:
        """Fetch and verify shards this node lacks from peers; returns how many were stored."""
        assert self.store is not None
        missing = self.store.missing()
        if not missing or not peers:
            return 0

        async def fetch(peer: PeerRecord, shard_id: str) -> bytes | None:
            try:
                return await node.fetch_data(peer, shard_id, timeout=60.0)
            except P2PError:
                return None

        report = await fetch_missing(self.store, missing, peers, fetch)
        for peer, shard_id, why in report.refused:
            log.warning("peer %s sent a bad shard %s: %s", peer.node_id.hex()[:12], shard_id, why)
        return len(report.fetched)

    def open_loader(self, batch_size: int, seq_len: int) -> BatchLoader:
        assert self.store is not None
        self.loader = BatchLoader(self.store, self.store.manifest, batch_size=batch_size, seq_len=seq_len,
                                  seed=self.seed)
        return self.loader

    def next_batch(self) -> torch.Tensor:
        """[B, T+1] token ids: inputs with the last target appended (the pipeline shifts them)."""
        assert self.loader is not None
        inputs, targets = self.loader.next_batch()
        return torch.cat([inputs, targets[:, -1:]], dim=1)

    def loader_state(self) -> dict[str, Any]:
        return self.loader.state_dict() if self.loader is not None else {}

    def restore_loader(self, state: dict[str, Any]) -> None:
        if self.loader is not None and state:
            try:
                self.loader.load_state_dict(state)
            except DataError as exc:
                log.warning("data position not restored (%s); continuing from the start", exc)

    async def serve(self, shard_id: str) -> bytes | None:
        if self.store is None:
            return None
        data = await asyncio.get_running_loop().run_in_executor(None, self.store.serve, shard_id)
        if data is not None:
            self.samples_served += 1
        return data
