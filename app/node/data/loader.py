"""Deterministic training batches from a node's share of the genesis corpus.

**Shares.** A node trains on share ``(index, count)``. With at least ``count`` shards, the share
is the shards whose position ``i`` has ``i % count == index`` (a node needs only those
shards); with fewer shards than shares (a tiny corpus, a big devnet) every node needs every
shard and the share is the sequence windows ``j`` with ``j % count == index``. Either way
shares are disjoint and together cover the corpus.

**Windows and order.** Each shard's token stream is cut into non-overlapping windows of
``seq_len + 1`` tokens (inputs are the first ``seq_len``, targets the last ``seq_len``); the tail
that does not fill a window is dropped. Every epoch visits the share's windows in a random
order drawn from ``(seed, epoch)``, so two nodes with the same seed and share yield identical
batches, and ``state_dict()`` / ``load_state_dict()`` resume the stream exactly after a restart.

**Vocabulary growth.** Shards hold genesis byte tokens with documents separated by ``<eos>``.
Given a tokenizer with merges (app/node/tokenizer.py), each document's bytes are re-encoded
with it when a shard is loaded, so the same signed shards serve every vocabulary version.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from app.node.data.manifest import DataError, GenesisManifest
from app.node.data.store import ShardStore


class MissingShards(DataError):
    """The loader needs shards that are not in the local store yet."""

    def __init__(self, shard_ids: Sequence[str]) -> None:
        self.shard_ids = list(shard_ids)
        super().__init__(f"{len(self.shard_ids)} shard(s) of this node's data share are not stored "
                         f"locally ({', '.join(self.shard_ids[:3])}…); fetch them from a data node first")


class Tokenizer(Protocol):
    """What the loader needs of app/node/tokenizer.NeuroTokenizer."""

    @property
    def merges(self) -> list[tuple[bytes, bytes]]: ...

    def encode_batch(self, texts: Sequence[str | bytes]) -> list[list[int]]: ...


def share_shards(manifest: GenesisManifest, share: tuple[int, int]) -> list[str]:
    """The shard ids a node with ``share`` needs (see the module docstring)."""
    index, count = _check_share(share)
    ids = manifest.shard_ids
    if len(ids) >= count:
        return [sid for i, sid in enumerate(ids) if i % count == index]
    return ids


def reencode(tokens: np.ndarray, separator_id: int, tokenizer: Tokenizer | None) -> np.ndarray:
    """Genesis byte tokens -> ids of ``tokenizer`` (documents re-encoded one by one).

    Without a tokenizer, or one without merges, the genesis ids are already right.
    """
    if tokenizer is None or not tokenizer.merges:
        return tokens.astype(np.int64)
    cuts = np.flatnonzero(tokens == separator_id)
    docs = np.split(tokens, cuts + 1)
    texts = [bytes(d[d != separator_id].astype(np.uint8)) for d in docs]
    out: list[int] = []
    for doc, ids in zip(docs, tokenizer.encode_batch(texts), strict=True):
        out.extend(ids)
        if doc.size and doc[-1] == separator_id:
            out.append(separator_id)
    return np.asarray(out, dtype=np.int64)


class BatchLoader:
    """Yields ``(inputs, targets)`` LongTensors of shape [batch_size, seq_len], forever."""

    def __init__(self, store: ShardStore, manifest: GenesisManifest, *, batch_size: int, seq_len: int,
                 seed: int = 0, share: tuple[int, int] = (0, 1), tokenizer: Tokenizer | None = None) -> None:
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.share = _check_share(share)
        self.required_shards = share_shards(manifest, self.share)
        missing = store.missing(self.required_shards)
        if missing:
            raise MissingShards(missing)
        self._streams = [reencode(store.tokens(s), manifest.separator_id, tokenizer)
                         for s in self.required_shards]
        self._windows = self._share_windows(window_level=len(manifest.shard_ids) < self.share[1])
        if len(self._windows) < 1:
            raise DataError(f"data share {self.share} holds no window of {seq_len + 1} tokens; "
                            "use a shorter seq_len, fewer nodes or a larger corpus")
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation(0)

    def _share_windows(self, *, window_level: bool) -> np.ndarray:
        span = self.seq_len + 1
        pairs = [(s, start) for s, stream in enumerate(self._streams)
                 for start in range(0, stream.size - span + 1, span)]
        if window_level:
            index, count = self.share
            pairs = pairs[index::count]
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (1 << 63))
        return torch.randperm(len(self._windows), generator=generator)

    @property
    def windows_per_epoch(self) -> int:
        return len(self._windows)

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.seq_len

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for _ in range(self.batch_size):
            if self.cursor >= len(self._order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            shard, start = self._windows[int(self._order[self.cursor])]
            rows.append(self._streams[shard][start:start + self.seq_len + 1])
            self.cursor += 1
        batch = torch.from_numpy(np.stack(rows))
        return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """Position in the stream, for checkpoints (JSON-serialisable)."""
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "share": list(self.share),
                "batch_size": self.batch_size, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume where ``state_dict()`` was taken; DataError if it belongs to another stream."""
        same = (state.get("seed") == self.seed and list(state.get("share", [])) == list(self.share)
                and state.get("seq_len") == self.seq_len)
        epoch, cursor = state.get("epoch"), state.get("cursor")
        if not same or not isinstance(epoch, int) or not isinstance(cursor, int) or epoch < 0 \
                or not 0 <= cursor <= len(self._windows):
            raise DataError("loader state does not match this data stream (seed, share or seq_len differ); "
                            "start the stream from the beginning instead")
        self.epoch, self.cursor = epoch, cursor
        self._order = self._permutation(epoch)


def _check_share(share: tuple[int, int]) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in share)
    except (TypeError, ValueError):
        raise ValueError(f"share must be (index, count), got {share!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"share index must be in 0..count-1 and count >= 1, got {share!r}")
    return index, count
