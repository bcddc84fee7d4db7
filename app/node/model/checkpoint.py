"""Checkpoints as safetensors files that say which model they hold and survive crashes.

Metadata records the format, the architecture (JSON), its version, the tokenizer's content
hash, a SHA-256 over every tensor's name, dtype, shape and bytes, and a content hash over all of
that metadata (``content_sha256``), so a flipped bit is caught anywhere in the file, header
included, not only a truncated file. Writes go to a temporary file in the same directory, are
fsynced and renamed over the target (atomic on POSIX and Windows), and the previous file is
kept as ``<name>.prev``: a crash or a corrupted write never leaves a node without a checkpoint.

The good copy is never destroyed. Rotation verifies the file it is about to keep as ``.prev``;
one that fails (bit rot since it was written) is *set aside* instead, renamed to
``<name>.corrupt-<UTC time>`` for diagnostics, and the verified ``.prev`` stays.
``load_newest_good`` loads the newest copy that verifies: a bad newest one is set aside and the
verified ``.prev`` takes its place; when both are bad it raises ``CheckpointsUnusable`` and renames
nothing, so the caller decides (restore from a replica, ask the volunteer, or stop) and
``set_aside_all`` then clears the way.

Loading a checkpoint of another architecture raises ``ArchitectureMismatch`` naming every
difference; seed 000 deleted such checkpoints, we offer growth instead (DESIGN.md §3).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from app.node.model.architecture import ModelArchitecture

FORMAT = "neuroshard-checkpoint/2"
"""Version 2 adds ``content_sha256`` over the metadata; version 1 files (tensor hash only) still load."""
_FORMAT_V1 = "neuroshard-checkpoint/1"
SET_ASIDE_MARK = ".corrupt-"


class CheckpointError(Exception):
    """A checkpoint could not be written or read."""


class CheckpointCorrupted(CheckpointError):
    """The file is truncated, not safetensors, or its contents fail the integrity hash."""


class CheckpointsUnusable(CheckpointCorrupted):
    """Neither the newest checkpoint nor its ``.prev`` verifies; nothing was renamed or deleted."""

    def __init__(self, message: str, paths: tuple[Path, ...]) -> None:
        super().__init__(message)
        self.paths = paths


class ArchitectureMismatch(CheckpointError):
    """The checkpoint holds a different architecture than the caller expects."""

    def __init__(self, stored: ModelArchitecture, expected: ModelArchitecture, path: Path) -> None:
        self.stored, self.expected = stored, expected
        diffs = ", ".join(f"{f.name} {getattr(stored, f.name)} -> {getattr(expected, f.name)}"
                          for f in fields(ModelArchitecture)
                          if getattr(stored, f.name) != getattr(expected, f.name))
        grows = all(getattr(expected, n) >= getattr(stored, n) for n in ("hidden", "layers", "ffn", "vocab"))
        advice = ("growth can convert it without losing what it learned "
                  "(app.node.model.growth.grow_to)" if grows else
                  "the expected model is smaller in some dimension, so growth cannot convert it; "
                  "distil it or start a fresh model")
        super().__init__(f"checkpoint {path} holds architecture v{stored.version} which differs from "
                         f"the expected v{expected.version} ({diffs}); {advice}. The file was left untouched.")


@dataclass
class Checkpoint:
    state: dict[str, torch.Tensor]
    arch: ModelArchitecture
    tokenizer_hash: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SetAside:
    """An unusable checkpoint renamed out of the way (kept for diagnostics, never deleted)."""

    original: Path
    now_at: Path
    reason: str


@dataclass(frozen=True)
class Loaded:
    """The newest checkpoint that verified, where it now lies, and what was set aside to get it."""

    checkpoint: Checkpoint
    path: Path
    set_aside: tuple[SetAside, ...] = ()


def previous_path(path: str | os.PathLike[str]) -> Path:
    """Where the checkpoint that ``path`` replaced is kept."""
    p = Path(path)
    return p.with_name(p.name + ".prev")


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and raw bytes, in name order (same on every node)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # buffer protocol, no copy
    return h.hexdigest()


def content_digest(metadata: dict[str, str]) -> str:
    """SHA-256 over every metadata entry but itself (the tensor hash is one of them)."""
    body = {k: v for k, v in metadata.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, torch.Tensor], arch: ModelArchitecture,
                    *, tokenizer_hash: str = "", extra: dict[str, str] | None = None) -> SetAside | None:
    """Write ``state`` atomically; the file it replaces is kept as ``<path>.prev`` when it verifies.

    A replaced file that no longer verifies is set aside instead (returned), so an unverified
    file never overwrites the verified ``.prev``."""
    target = Path(path)
    tensors = _unshared(state)
    extra = dict(extra or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise CheckpointError("extra metadata must map strings to strings")
    metadata = {"format": FORMAT, "architecture": json.dumps(arch.to_dict(), sort_keys=True),
                "arch_version": str(arch.version), "tokenizer_hash": tokenizer_hash,
                "extra": json.dumps(extra, sort_keys=True), "sha256": tensor_digest(tensors)}
    metadata["content_sha256"] = content_digest(metadata)
    payload = st_save(tensors, metadata=metadata)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    aside: SetAside | None = None
    try:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        if target.exists():
            problem = verify_checkpoint(target)
            if problem is None:
                _keep_previous(target)
            else:
                aside = set_aside(target, problem)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint {target}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return aside


def verify_checkpoint(path: str | os.PathLike[str]) -> str | None:
    """None when ``path`` reads and verifies, else why not (the file is not touched)."""
    try:
        load_checkpoint(path)
    except CheckpointError as exc:
        return str(exc)
    return None


def set_aside(path: str | os.PathLike[str], reason: str) -> SetAside:
    """Rename an unusable checkpoint to ``<name>.corrupt-<UTC time>`` next to it (never deleted)."""
    source = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = source.with_name(f"{source.name}{SET_ASIDE_MARK}{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = source.with_name(f"{source.name}{SET_ASIDE_MARK}{stamp}.{n}")
    os.replace(source, dest)
    _fsync_dir(source.parent)
    return SetAside(original=source, now_at=dest, reason=reason)


def set_aside_all(path: str | os.PathLike[str], reason: str) -> tuple[SetAside, ...]:
    """Set aside the checkpoint and its ``.prev`` (after ``CheckpointsUnusable``, once the caller
    decided how to go on), so the next save starts a clean rotation."""
    return tuple(set_aside(p, reason) for p in (Path(path), previous_path(path)) if p.exists())


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors; safetensors refuses tensors sharing memory (tied embeddings)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, t in state.items():
        t = t.detach().to("cpu").contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        out[name] = t.clone() if key in seen else t
        seen.add(key)
    return out


def _keep_previous(target: Path) -> None:
    prev = previous_path(target)
    staging = prev.with_name(prev.name + ".tmp")
    try:
        os.link(target, staging)  # cheap, and the target never disappears meanwhile
    except OSError:
        shutil.copy2(target, staging)
    os.replace(staging, prev)


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return  # Windows cannot open a directory; NTFS journals the rename itself
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike[str],
                    expected_arch: ModelArchitecture | None = None) -> Checkpoint:
    """Read and verify a checkpoint; never modifies or deletes the file."""
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {source}: {exc}") from exc
    metadata, state = _parse(data, source)
    arch = _metadata_arch(metadata, source)
    if metadata.get("sha256") != tensor_digest(state):
        raise _corrupted(source, "its tensors do not match the recorded SHA-256")
    if expected_arch is not None and _shape_fields(arch) != _shape_fields(expected_arch):
        raise ArchitectureMismatch(arch, expected_arch, source)
    try:
        extra = json.loads(metadata.get("extra", "{}"))
    except json.JSONDecodeError as exc:
        raise _corrupted(source, f"its extra metadata is not JSON ({exc})") from exc
    return Checkpoint(state=state, arch=arch, tokenizer_hash=metadata.get("tokenizer_hash", ""),
                      extra={str(k): str(v) for k, v in extra.items()})


def _parse(data: bytes, source: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if len(data) < 8:
        raise _corrupted(source, f"it is only {len(data)} bytes long")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise _corrupted(source, "it is truncated (header longer than the file)")
    try:
        header = json.loads(data[8:8 + header_len])
        state = st_load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise _corrupted(source, f"it is not a valid safetensors file ({exc})") from exc
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("format") not in (FORMAT, _FORMAT_V1):
        raise _corrupted(source, f"it has no {FORMAT} metadata")
    if metadata.get("format") == FORMAT and metadata.get("content_sha256") != content_digest(metadata):
        raise _corrupted(source, "its metadata does not match the recorded content hash")
    return metadata, state


def _metadata_arch(metadata: dict[str, str], source: Path) -> ModelArchitecture:
    try:
        return ModelArchitecture.from_dict(json.loads(metadata.get("architecture", "")))
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise _corrupted(source, f"its architecture metadata is invalid ({exc})") from exc


def _shape_fields(arch: ModelArchitecture) -> ModelArchitecture:
    """Architectures compare on shapes and numerics; the version alone is not a mismatch."""
    return arch.with_changes(version=1)


def _corrupted(source: Path, reason: str) -> CheckpointCorrupted:
    prev = previous_path(source)
    hint = (f"; the previous checkpoint is still at {prev}" if prev.exists()
            else "; no previous checkpoint is kept next to it")
    return CheckpointCorrupted(f"checkpoint {source} is unusable: {reason}{hint}")


def load_with_fallback(path: str | os.PathLike[str],
                       expected_arch: ModelArchitecture | None = None) -> tuple[Checkpoint, Path]:
    """Load ``path``, or its ``.prev`` when ``path`` is corrupted; returns the file used.

    An ``ArchitectureMismatch`` is not a reason to fall back: it is raised so the caller can
    offer growth. When both files are unusable, the error names both.
    """
    try:
        return load_checkpoint(path, expected_arch), Path(path)
    except CheckpointCorrupted as first:
        prev = previous_path(path)
        if not prev.exists():
            raise
        try:
            return load_checkpoint(prev, expected_arch), prev
        except CheckpointCorrupted as second:
            raise CheckpointCorrupted(f"{first}; and {second}") from second


def load_newest_good(path: str | os.PathLike[str],
                     expected_arch: ModelArchitecture | None = None) -> Loaded:
    """Load the newest checkpoint that verifies, leaving it at ``path``.

    A corrupted newest file is set aside and the verified ``.prev`` is moved into its place (so
    the next save rotates a verified file into ``.prev`` again); a missing newest file with a
    ``.prev`` left (a crash mid-rotation by an older version) is handled the same way. Both
    unusable: ``CheckpointsUnusable`` naming both reasons, nothing renamed. ``ArchitectureMismatch``
    passes through untouched (the caller can offer growth).
    """
    target, prev = Path(path), previous_path(path)
    reasons: list[str] = []
    if target.exists():
        try:
            return Loaded(load_checkpoint(target, expected_arch), target)
        except CheckpointCorrupted as exc:
            reasons.append(str(exc))
    if not prev.exists():
        if not reasons:
            raise CheckpointError(f"cannot read checkpoint {target}: no such file")
        raise CheckpointsUnusable(reasons[0] + "; no previous copy to fall back on", (target,))
    try:
        checkpoint = load_checkpoint(prev, expected_arch)
    except CheckpointCorrupted as exc:
        reasons.append(str(exc))
        raise CheckpointsUnusable("; and ".join(reasons),
                                  tuple(p for p in (target, prev) if p.exists())) from exc
    aside = (set_aside(target, reasons[0]),) if reasons else ()
    os.replace(prev, target)
    _fsync_dir(target.parent)
    return Loaded(checkpoint, target, aside)
