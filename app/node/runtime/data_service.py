"""DataService: the genesis corpus on this node — batches for a driver, shards for peers.

The bundled, signature-checked sample corpus (app/node/data/bundled.py) is installed into the
data dir; a driver reads batches from it through training-A's BatchLoader (each driver its own
seed, so two drivers do not train on the same order), and in data mode the node serves its
verified shards to peers. Shards a node lacks are fetched from peers and verified against the
signed manifest (app/node/data/sync.py) before use; what each peer served goes into the
node's ReceiptBook (data_receipts.py), which the economy signs receipts from, so the data nodes
that served are paid for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import torch

from app.crypto.keys import address_from_public_key
from app.node.data.builder import PUBLIC_KEY_NAME
from app.node.data.bundled import open_bundled_store, open_corpus_store
from app.node.data.loader import BatchLoader
from app.node.data.manifest import DataError
from app.node.data.store import ShardStore
from app.node.data.sync import fetch_missing, samples_in
from app.node.p2p.errors import P2PError
from app.node.p2p.node import P2PNode
from app.node.p2p.records import PeerRecord
from app.node.runtime.data_receipts import ReceiptBook

log = logging.getLogger("neuroshard.runtime.data")
FETCH_ATTEMPTS, FETCH_RETRY_S = 30, 2.0
"""A node that lacks shards asks the peers it knows every 2 s for up to a minute."""


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
                 genesis_public_key: str = "", receipts: ReceiptBook | None = None) -> None:
        """``receipts``: where shards fetched from peers are noted for the economy to sign for
        (None: rewards are off, nothing is signed)."""
        self.data_dir = data_dir
        self.corpus_dir, self.genesis_public_key = corpus_dir, genesis_public_key
        self.node_id = node_id
        self.seed = seed_for(node_id, seed or 0)
        self.store: ShardStore | None = None
        self.loader: BatchLoader | None = None
        self.samples_served = 0
        self.receipts = receipts

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
        """Fetch and verify shards this node lacks from peers; returns how many were stored. What
        each peer served is noted in the receipt book (the receiver's side of data-mode pay)."""
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
        if self.receipts is not None:
            self.receipts.note((address_from_public_key(peer.public_key), samples)
                               for peer, _shard, samples in report.served)
        if report.fetched:
            log.info("fetched %d shards from %d peers", len(report.fetched), len({p.node_id for p, _, _ in report.served}))
        return len(report.fetched)

    async def fetch_until_complete(self, node: P2PNode, peers: Callable[[], Awaitable[list[PeerRecord]]],
                                   sleep: Callable[[float], Awaitable[bool]], attempts: int = FETCH_ATTEMPTS) -> bool:
        """Fetch what the store lacks from the peers known now, again every ``FETCH_RETRY_S`` while
        shards are missing (a data node may join after us), at most ``attempts`` times or until
        ``sleep`` says stop. True when nothing is missing any more."""
        assert self.store is not None
        for attempt in range(attempts):
            if not self.store.missing():
                return True
            await self.fetch_missing_from(node, await peers())
            if self.store.missing() and (attempt == attempts - 1 or not await sleep(FETCH_RETRY_S)):
                break
        missing = self.store.missing()
        if missing:
            log.warning("%d genesis shards are still missing: no peer served them", len(missing))
        return not missing

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

    def open_stream(self, state: dict[str, Any], tokenizer: Any = None) -> Callable[[], torch.Tensor]:
        """Another driver's data stream continued at ``state`` (its published loader position: the
        same seed, so the same batches it would have trained); ValueError when it does not fit this
        node's data (another seed grid, batch or window size)."""
        assert self.store is not None and self.loader is not None
        seed = state.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < (1 << 62):
            raise ValueError(f"a data stream's seed must be a non-negative integer, got {seed!r}")
        if state.get("batch_size") != self.loader.batch_size:
            raise ValueError(f"that stream has batches of {state.get('batch_size')!r}, ours {self.loader.batch_size}")
        loader = BatchLoader(self.store, self.store.manifest, batch_size=self.loader.batch_size,
                             seq_len=self.loader.seq_len, seed=seed, tokenizer=tokenizer)
        try:
            loader.load_state_dict(state)
        except DataError as exc:
            raise ValueError(str(exc)) from exc

        def next_batch() -> torch.Tensor:
            inputs, targets = loader.next_batch()
            return torch.cat([inputs, targets[:, -1:]], dim=1)

        return next_batch

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
            self.samples_served += samples_in(len(data) // 2)  # uint16 tokens
        return data
