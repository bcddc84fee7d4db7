"""Copying a node's data dir to a new folder without ever leaving half a copy behind.

The data dir holds the wallet keystore, the ledger, checkpoints and config.toml: losing any of it
loses coins or work. So the copy goes into a hidden temporary folder next to the target (same
file system, so the final rename is atomic), every file is fsynced and read back against the
SHA-256 taken while reading the source, and only then is the folder renamed into place. Any
failure or a cancel removes the temporary folder; the source is only ever read.

No Qt here: the window runs :func:`copy_data_dir` on a worker thread (app/ui/data_dir_move.py).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.node.disk import tree_bytes

CHUNK = 1 << 20
SPACE_MARGIN_BYTES = 64 << 20
"""Free space to leave on the target's disk beyond the copy: the ledger and checkpoints grow."""
MARKERS = ("wallet.json", "keystore.json", "ledger.sqlite", "config.toml", "checkpoints")
"""Names that only a NeuroShard data dir holds (keystore, ledger, config, checkpoint folder)."""
TEMP_PREFIX = ".neuroshard-move-"

Progress = Callable[[int, int], None]  # bytes copied so far, bytes in all


class MoveError(Exception):
    """The data dir cannot go there; the message says why in words a volunteer can act on."""


class MoveCancelled(MoveError):
    def __init__(self) -> None:
        super().__init__("the move was cancelled; the data folder was not changed")


@dataclass(frozen=True)
class Target:
    path: Path
    existing: bool
    """The folder already holds a node's data: it can be used as is (nothing is copied)."""
    needed_bytes: int


def is_data_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in MARKERS)


def _files(root: Path) -> list[Path]:
    """Every regular file under ``root``, sorted (symlinks are not followed: a data dir has none)."""
    found = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                found.append(path)
    return sorted(found)


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied"
    return exc.strerror or str(exc)


def check_target(source: Path, target: Path) -> Target:
    """Validate a folder for the data dir before anything stops; MoveError says what is wrong."""
    source, target = Path(source).resolve(), Path(target).expanduser().resolve()
    if target == source:
        raise MoveError(f"{target} is already the data folder")
    if target.is_relative_to(source):
        raise MoveError(f"{target} is inside the current data folder; choose a folder outside it")
    if source.is_relative_to(target):
        raise MoveError(f"{target} contains the current data folder; choose another folder")
    if target.exists() and not target.is_dir():
        raise MoveError(f"{target} is a file, not a folder")
    if target.is_dir() and is_data_dir(target):
        return Target(target, existing=True, needed_bytes=0)
    if target.is_dir() and any(target.iterdir()):
        raise MoveError(f"{target} is not empty and holds no NeuroShard data; choose an empty folder")
    parent = target.parent
    if not parent.is_dir():
        raise MoveError(f"{parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=TEMP_PREFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise MoveError(f"cannot write in {parent}: {_describe(exc)}") from None
    needed = tree_bytes(source)
    free = shutil.disk_usage(parent).free
    if free < needed + SPACE_MARGIN_BYTES:
        raise MoveError(f"not enough free space on the disk of {parent}: the data needs "
                        f"{_mib(needed + SPACE_MARGIN_BYTES)}, {_mib(free)} is free")
    return Target(target, existing=False, needed_bytes=needed)


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # Windows cannot open a directory; its renames are durable on their own
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_file(src: Path, dst: Path, done: int, total: int, progress: Progress,
               cancel: threading.Event) -> tuple[int, str]:
    digest = hashlib.sha256()
    with src.open("rb") as reader, dst.open("xb") as writer:
        while chunk := reader.read(CHUNK):
            if cancel.is_set():
                raise MoveCancelled()
            writer.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            progress(done, total)
        writer.flush()
        os.fsync(writer.fileno())
    shutil.copymode(src, dst)  # the keystore stays 0600
    return done, digest.hexdigest()


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_data_dir(source: Path, target: Path, progress: Progress = lambda _d, _t: None,
                  cancel: threading.Event | None = None) -> None:
    """Copy ``source`` to ``target`` (absent or empty) atomically; MoveError on any failure.

    Call it only while no node writes to ``source`` (the engine is stopped).
    """
    source, target = Path(source).resolve(), Path(target).resolve()
    cancel = cancel or threading.Event()
    files = _files(source)
    total = sum(f.stat().st_size for f in files)
    try:
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{TEMP_PREFIX}{target.name}-"))
    except OSError as exc:
        raise MoveError(f"cannot write in {target.parent}: {_describe(exc)}") from None
    try:
        done, hashes = 0, {}
        progress(0, total)
        for src in files:
            rel = src.relative_to(source)
            dst = staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            done, hashes[rel] = _copy_file(src, dst, done, total, progress, cancel)
        for dirpath, _dirs, _names in os.walk(staging):
            _fsync_dir(Path(dirpath))
        for rel, expected in hashes.items():  # read back what the disk holds, not what we wrote
            copy = staging / rel
            if copy.stat().st_size != (source / rel).stat().st_size or _hash(copy) != expected:
                raise MoveError(f"the copy of {rel} does not match the original; nothing was changed")
        if cancel.is_set():
            raise MoveCancelled()
        if target.is_dir():
            target.rmdir()  # empty (checked): rename cannot replace a folder everywhere
        os.replace(staging, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise MoveError(f"could not copy the data to {target}: {_describe(exc)}; "
                        "the old data folder is still in use") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
