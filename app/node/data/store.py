"""A node's local copy of genesis shards, every byte checked against the signed manifest.

Shards arrive from data nodes (untrusted) or from the bundled sample; ``put`` refuses any whose
SHA-256, size or token range does not match, and ``get`` re-checks what is on disk, so a file
corrupted since (bad disk, a user's editor) is deleted and fetched again instead of trained on.
Writes go to a temporary file, are fsynced and renamed, so a crash never leaves half a shard.
Under a running node the data dir has a disk cap (app/node/disk.py): a shard that would take it
past ``limits.disk_bytes`` is refused with DiskCapExceeded before anything is written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from app.node.data.manifest import BadShard, GenesisManifest, ShardInfo, is_valid_shard_id
from app.node.disk import DiskCapExceeded, budget_for

log = logging.getLogger("neuroshard.data.store")


def check_shard_bytes(info: ShardInfo, data: bytes, vocab: int) -> None:
    """BadShard unless ``data`` is exactly the shard the manifest describes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadShard(f"{info.shard_id}: expected bytes, got {type(data).__name__}")
    if len(data) != info.nbytes:
        raise BadShard(f"{info.shard_id}: {len(data)} bytes, the manifest says {info.nbytes}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != info.sha256:
        raise BadShard(f"{info.shard_id}: SHA-256 {digest[:16]}… does not match the manifest's "
                       f"{info.sha256[:16]}…; the copy is corrupted or was altered")
    tokens = np.frombuffer(data, dtype="<u2")
    if tokens.size and int(tokens.max()) >= vocab:
        raise BadShard(f"{info.shard_id}: token id {int(tokens.max())} is outside the vocabulary of {vocab}")


class ShardStore:
    """Shards of one corpus under ``root`` (one ``shard-NNNNN.bin`` file each)."""

    def __init__(self, root: Path | str, manifest: GenesisManifest) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, shard_id: str) -> Path:
        if not is_valid_shard_id(shard_id):
            raise BadShard(f"malformed shard id {shard_id!r}")
        return self.root / self.manifest.shard(shard_id).filename

    def has(self, shard_id: str) -> bool:
        """True if the shard is on disk with the right size (the hash is checked by ``get``)."""
        if shard_id not in self.manifest:
            return False
        path = self._path(shard_id)
        return path.is_file() and path.stat().st_size == self.manifest.shard(shard_id).nbytes

    def missing(self, shard_ids: list[str] | None = None) -> list[str]:
        """Which of ``shard_ids`` (default: all the manifest's) are not here yet."""
        wanted = self.manifest.shard_ids if shard_ids is None else shard_ids
        return [s for s in wanted if not self.has(s)]

    def get(self, shard_id: str) -> bytes:
        """The shard's verified bytes. A corrupted file is deleted and BadShard raised."""
        info = self.manifest.shard(shard_id)
        path = self._path(shard_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BadShard(f"{shard_id} is not stored here yet; fetch it from a data node") from None
        try:
            check_shard_bytes(info, data, self.manifest.vocab)
        except BadShard:
            path.unlink(missing_ok=True)
            raise
        return data

    def tokens(self, shard_id: str) -> np.ndarray:
        """The shard's verified genesis tokens as a uint16 array."""
        return np.frombuffer(self.get(shard_id), dtype="<u2").astype(np.uint16)

    def put(self, shard_id: str, data: bytes) -> None:
        """Store a shard after checking it against the manifest; BadShard if it does not match,
        DiskCapExceeded (nothing written) if it would take the data dir past its cap."""
        info = self.manifest.shard(shard_id)
        check_shard_bytes(info, data, self.manifest.vocab)
        path = self._path(shard_id)
        budget = budget_for(self.root)
        if budget is None:
            atomic_write(path, bytes(data))
            return
        # The temporary copy and the file it replaces exist together for a moment: the peak counts.
        with budget.reserve(len(data), what=f"data shard {shard_id}"):
            atomic_write(path, bytes(data))

    def serve(self, shard_id: object) -> bytes | None:
        """For a data node's gRPC handler: the verified bytes, or None for anything we cannot
        serve (unknown or malformed id, not stored, corrupted). Never raises on peer input."""
        if not isinstance(shard_id, str) or shard_id not in self.manifest:
            return None
        try:
            return self.get(shard_id)
        except BadShard:
            return None

    def install_from(self, source_dir: Path | str) -> list[str]:
        """Copy every shard found in ``source_dir`` that verifies; returns the ids installed."""
        installed = []
        for info in self.manifest.shards:
            if self.has(info.shard_id):
                continue
            path = Path(source_dir) / info.filename
            if not path.is_file():
                continue
            try:
                self.put(info.shard_id, path.read_bytes())
            except BadShard:
                continue
            except DiskCapExceeded:
                # Already reported; the shards installed so far train, the rest would not fit either.
                log.warning("stopped installing shards from %s at the disk cap (%d installed)", source_dir,
                            len(installed))
                break
            installed.append(info.shard_id)
        return installed


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # shards are public data; mkstemp's 0600 would hide them from a service user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
