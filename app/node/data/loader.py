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

**Vocabulary growth.** Shards hold genesis byte tokens with documents separated by ``<eos>``,
and the same signed shards serve every vocabulary: a vocabulary is the genesis one plus a list
of merges, and BPE encoding is exactly "replace each merge's pair, in merge order, inside each
pre-token" (a merge's new token only takes part in later merges, so no earlier merge can fire
again). ``apply_merge_ids`` does that with numpy, one vectorised pass per merge whose parts
still occur (a running count skips the others), and never across a pre-token boundary, which
is where the tokenizer's regular expression splits the bytes; so the ids equal
``NeuroTokenizer.encode`` of the same text (a property test pins it). ``set_tokenizer`` applies
only the merges a stream has not seen yet, so a vote that adds a few merges costs a few passes.

**Positions survive a vocabulary change.** Windows are laid on the *genesis* grid: window ``j``
of a shard starts at genesis position ``j · (seq_len + 1)`` whatever the vocabulary, and reads
``seq_len + 1`` tokens of the current vocabulary from the first token that starts there or
later (padded with ``<pad>``, which the loss ignores, where a shard ends). The set of windows,
their order and therefore ``(epoch, cursor)`` mean the same text before and after a merge is
activated, and a checkpointed position resumes exactly under either vocabulary. The price: once
tokens are longer than a byte, a window reads past its grid cell into the next one, so text is
seen up to bytes-per-token times per epoch (strided, overlapping windows) while the number of
steps per epoch stays the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from app.node.data.manifest import DataError, GenesisManifest
from app.node.data.store import ShardStore
from app.node.tokenizer import FIRST_MERGE, FIRST_SPECIAL, NeuroTokenizer, pretoken_starts

PAD_ID = NeuroTokenizer.special_id("<pad>")


class MissingShards(DataError):
    """The loader needs shards that are not in the local store yet."""

    def __init__(self, shard_ids: Sequence[str]) -> None:
        self.shard_ids = list(shard_ids)
        super().__init__(f"{len(self.shard_ids)} shard(s) of this node's data share are not stored "
                         f"locally ({', '.join(self.shard_ids[:3])}…); fetch them from a data node first")


class Tokenizer(Protocol):
    """What the loader needs of app/node/tokenizer.NeuroTokenizer."""

    @property
    def merge_ids(self) -> list[tuple[int, int]]: ...


def share_shards(manifest: GenesisManifest, share: tuple[int, int]) -> list[str]:
    """The shard ids a node with ``share`` needs (see the module docstring)."""
    index, count = _check_share(share)
    ids = manifest.shard_ids
    if len(ids) >= count:
        return [sid for i, sid in enumerate(ids) if i % count == index]
    return ids


def pretoken_segments(tokens: np.ndarray) -> np.ndarray:
    """A segment number per genesis token: equal numbers may merge, different ones never.

    Segments are the tokenizer's pre-tokens inside each run of byte tokens; every special token
    (the ``<eos>`` separator) is a segment of its own, so documents never merge into each other.
    """
    tokens = np.asarray(tokens)
    starts = np.zeros(tokens.size, dtype=bool)
    special = tokens >= FIRST_SPECIAL
    starts[special] = True
    edges = np.flatnonzero(np.diff(np.concatenate([[1], special.astype(np.int8), [1]])))
    for begin, end in zip(edges[::2], edges[1::2], strict=True):  # runs of byte tokens
        starts[begin + np.asarray(pretoken_starts(tokens[begin:end].astype(np.uint8).tobytes()), dtype=np.int64)] = True
    if tokens.size:
        starts[0] = True
    starts[1:] |= special[:-1]  # the token after a special begins a new segment too
    return np.cumsum(starts, dtype=np.int64)


@dataclass
class MergedStream:
    """A shard's token stream under some merges: ids, their pre-token segment, and the genesis
    position each token starts at (to find the genesis grid in the merged stream)."""

    ids: np.ndarray
    segments: np.ndarray
    positions: np.ndarray
    merges_applied: int = 0

    @classmethod
    def genesis(cls, tokens: np.ndarray) -> MergedStream:
        ids = np.asarray(tokens).astype(np.int64)
        return cls(ids, pretoken_segments(ids), np.arange(ids.size, dtype=np.int64))


def apply_merge_ids(stream: MergedStream, merges: Sequence[tuple[int, int]], first_new_id: int) -> MergedStream:
    """``stream`` with ``merges`` (id pairs; merge ``k`` makes ``first_new_id + k``) applied in order.

    Each merge replaces every non-overlapping occurrence of its pair inside one segment, left to
    right (``a a a`` -> ``(aa) a``, as the BPE library does); numpy does each pass.
    """
    ids, seg, pos = stream.ids, stream.segments, stream.positions
    counts = np.bincount(ids, minlength=first_new_id + len(merges)).astype(np.int64)
    for k, (a, b) in enumerate(merges):
        new = first_new_id + k
        if counts.size <= new:
            counts = np.concatenate([counts, np.zeros(new + 1 - counts.size, dtype=np.int64)])
        if counts[a] == 0 or counts[b] == 0 or ids.size < 2:
            continue
        hits = np.flatnonzero(ids[:-1] == a)  # one full pass; the other tests only on candidates
        hits = hits[(ids[hits + 1] == b) & (seg[hits] == seg[hits + 1])]
        if a == b and hits.size > 1:  # in a run "a a a a" only every second pair, from its start
            run_start = np.ones(hits.size, dtype=bool)
            run_start[1:] = hits[1:] != hits[:-1] + 1
            first_of_run = np.flatnonzero(run_start)[np.cumsum(run_start) - 1]
            hits = hits[(np.arange(hits.size) - first_of_run) % 2 == 0]
        if hits.size == 0:
            continue
        ids = ids.copy() if ids is stream.ids else ids
        ids[hits] = new
        keep = np.ones(ids.size, dtype=bool)
        keep[hits + 1] = False
        ids, seg, pos = ids[keep], seg[keep], pos[keep]
        counts[a] -= hits.size
        counts[b] -= hits.size
        counts[new] += hits.size
    return MergedStream(ids, seg, pos, stream.merges_applied + len(merges))


def reencode(tokens: np.ndarray, separator_id: int, tokenizer: Tokenizer | None) -> np.ndarray:
    """Genesis byte tokens -> ids of ``tokenizer`` (the separator stays a token of its own)."""
    stream = MergedStream.genesis(tokens)
    if tokenizer is None or not tokenizer.merge_ids:
        return stream.ids
    return apply_merge_ids(stream, tokenizer.merge_ids, FIRST_MERGE).ids


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
        self._genesis = [MergedStream(ids=np.asarray(store.tokens(s)).astype(np.int64), segments=np.zeros(0),
                                      positions=np.zeros(0)) for s in self.required_shards]
        self._streams = list(self._genesis)  # segments are computed once merges first arrive
        self._merge_ids: list[tuple[int, int]] = []
        self._windows = self._share_windows(window_level=len(manifest.shard_ids) < self.share[1])
        if len(self._windows) < 1:
            raise DataError(f"data share {self.share} holds no window of {seq_len + 1} tokens; "
                            "use a shorter seq_len, fewer nodes or a larger corpus")
        self._row_starts = self._windows[:, 1].copy()
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation(0)
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)

    def _share_windows(self, *, window_level: bool) -> np.ndarray:
        """(shard, genesis start) of every window of the share, on the genesis grid."""
        span = self.seq_len + 1
        pairs = [(s, start) for s, stream in enumerate(self._genesis)
                 for start in range(0, stream.ids.size - span + 1, span)]
        if window_level:
            index, count = self.share
            pairs = pairs[index::count]
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)

    @property
    def merges_applied(self) -> int:
        return len(self._merge_ids)

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Yield ids of ``tokenizer`` from the next batch on; the position in the stream stays.

        A tokenizer that extends the current merge list costs only the new merges' passes;
        another list (a rewind) is applied from the genesis tokens again.
        """
        merges = list(tokenizer.merge_ids)
        if merges == self._merge_ids:
            return
        extends = merges[:len(self._merge_ids)] == self._merge_ids
        new_streams = []
        for genesis, current in zip(self._genesis, self._streams, strict=True):
            if not extends or current.segments.size != current.ids.size:
                base = MergedStream.genesis(genesis.ids)
                new_streams.append(apply_merge_ids(base, merges, FIRST_MERGE))
            else:
                new = merges[len(self._merge_ids):]
                new_streams.append(apply_merge_ids(current, new, FIRST_MERGE + len(self._merge_ids)))
        row_starts = np.empty(len(self._windows), dtype=np.int64)
        for s, stream in enumerate(new_streams):
            mine = self._windows[:, 0] == s
            row_starts[mine] = np.searchsorted(stream.positions, self._windows[mine, 1])
        self._streams, self._merge_ids, self._row_starts = new_streams, merges, row_starts

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
            window = int(self._order[self.cursor])
            ids = self._streams[int(self._windows[window, 0])].ids
            start = int(self._row_starts[window])
            row = ids[start:start + self.seq_len + 1]
            if row.size < self.seq_len + 1:  # a shard's last windows once tokens are longer
                row = np.concatenate([row, np.full(self.seq_len + 1 - row.size, PAD_ID, dtype=np.int64)])
            rows.append(row)
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
