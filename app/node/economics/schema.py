"""The ledger's SQLite schema and its migrations, versioned with ``PRAGMA user_version``.

Each migration is applied once, in order, inside one transaction with the version bump, so a
crash leaves the database at the old or the new version, never between. A database written by
a newer release is refused rather than guessed at.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator


class LedgerError(RuntimeError):
    """The ledger database cannot be used; the message says what to do."""


def _v1(db: sqlite3.Connection) -> None:
    db.execute("""CREATE TABLE records (
        cursor INTEGER PRIMARY KEY AUTOINCREMENT,
        record_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        author TEXT NOT NULL,
        ts INTEGER NOT NULL,
        raw BLOB NOT NULL,
        received_ms INTEGER NOT NULL)""")
    db.execute("CREATE INDEX records_author ON records(author)")
    db.execute("""CREATE TABLE balances (
        address TEXT PRIMARY KEY,
        available INTEGER NOT NULL, staked INTEGER NOT NULL, locked INTEGER NOT NULL,
        pending_rewards INTEGER NOT NULL, unbonding INTEGER NOT NULL,
        next_seq INTEGER NOT NULL, flagged INTEGER NOT NULL)""")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> int:
    """Brings ``db`` to ``SCHEMA_VERSION``; returns the version it found."""
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise LedgerError(
            f"ledger database has schema version {found}, newer than this release supports "
            f"({SCHEMA_VERSION}); update NeuroShard Node or restore a backup")
    for version in range(found, SCHEMA_VERSION):
        with transaction(db):
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
    return found


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error: one change, one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def connect(path: str) -> sqlite3.Connection:
    """Opens the database in WAL mode (readers never block the writer); transactions are explicit."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"cannot open ledger database {path}: {exc}; move it away to start afresh") from exc
    return db
