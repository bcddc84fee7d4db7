"""Turn text into a signed genesis corpus: shards of byte tokens plus a signed manifest.

Genesis tokenisation is the UTF-8 bytes of each text (ids 0..255), documents separated by
``<eos>``; the stream is cut into shards of ``shard_tokens`` tokens (the last may be shorter).
Shards always hold genesis tokens, whatever merges the network votes in later: the loader
applies the current tokenizer's merges when it reads them, so a corpus never has to be rebuilt
(or re-signed) when the vocabulary grows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from app.crypto.keys import PrivateKey
from app.node.data.manifest import (
    EOS_ID,
    MAX_SHARD_TOKENS,
    DataError,
    GenesisManifest,
    ShardInfo,
    shard_id_for,
)
from app.node.data.store import atomic_write

DEFAULT_SHARD_TOKENS = 1 << 16
"""64 Ki tokens = 128 KiB per shard: small enough that a data node serves one in a single
gRPC message well under the 4 MiB default limit, large enough that a few MB of sample text
makes tens of shards, so nodes of a small devnet can each own different ones."""

MANIFEST_NAME = "manifest.json"
PUBLIC_KEY_NAME = "genesis_public_key.hex"


def genesis_tokens(texts: Iterable[str], separator_id: int = EOS_ID) -> Iterator[np.ndarray]:
    """Each non-empty text as its UTF-8 bytes followed by the separator, as uint16 arrays."""
    for text in texts:
        raw = text.encode("utf-8", errors="replace")
        if raw:
            yield np.concatenate([np.frombuffer(raw, dtype=np.uint8).astype(np.uint16),
                                  np.array([separator_id], dtype=np.uint16)])


def _chunks(pieces: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Re-cut a stream of token arrays into arrays of exactly ``size`` (the last may be shorter)."""
    buffer: list[np.ndarray] = []
    held = 0
    for piece in pieces:
        buffer.append(piece)
        held += piece.size
        while held >= size:
            joined = np.concatenate(buffer)
            yield joined[:size]
            rest = joined[size:]
            buffer, held = ([rest] if rest.size else []), rest.size
    if held:
        yield np.concatenate(buffer)


def build_genesis(texts: Iterable[str], out_dir: Path | str, *, key: PrivateKey,
                  shard_tokens: int = DEFAULT_SHARD_TOKENS, name: str = "genesis",
                  separator_id: int = EOS_ID, max_tokens: int | None = None) -> GenesisManifest:
    """Write shards, ``manifest.json`` (signed by ``key``) and the public key into ``out_dir``.

    ``max_tokens`` caps the corpus size (the bundled sample stays a few MB). Raises DataError
    when the texts hold no tokens at all.
    """
    if not 0 < shard_tokens <= MAX_SHARD_TOKENS:
        raise DataError(f"shard_tokens must be in 1..{MAX_SHARD_TOKENS}, got {shard_tokens}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stream = genesis_tokens(texts, separator_id)
    if max_tokens is not None:
        stream = _capped(stream, max_tokens)
    infos = []
    for index, chunk in enumerate(_chunks(stream, shard_tokens)):
        data = chunk.astype("<u2").tobytes()
        info = ShardInfo(shard_id_for(index), hashlib.sha256(data).hexdigest(), int(chunk.size))
        atomic_write(out / info.filename, data)
        infos.append(info)
    if not infos:
        raise DataError("the input texts are empty: nothing to build a corpus from")
    manifest = GenesisManifest(name, shard_tokens, tuple(infos), "", "",
                               separator_id=separator_id).signed(key)
    manifest.save(out / MANIFEST_NAME)
    (out / PUBLIC_KEY_NAME).write_text(manifest.public_key + "\n")
    return manifest


def _capped(stream: Iterable[np.ndarray], max_tokens: int) -> Iterator[np.ndarray]:
    left = max_tokens
    for piece in stream:
        if left <= 0:
            return
        yield piece[:left]
        left -= piece.size


def read_public_key(corpus_dir: Path | str) -> str:
    """The genesis public key (hex) written beside a corpus by ``build_genesis``."""
    path = Path(corpus_dir) / PUBLIC_KEY_NAME
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise DataError(f"no genesis public key at {path}: build the corpus with "
                        "`python -m app.node.data.build` or pass the key explicitly") from exc
