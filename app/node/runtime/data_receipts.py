"""ReceiptBook: the work others did for this node, until it signs receipts for it.

Data mode is paid from the receivers' signed receipts (economics/handlers.py ``_receipt``): a
node that fetched shards (data/sync.py reports which peer served which, with its samples) owes
each server one ``receipt`` record per epoch saying how many samples it got. The ledger counts
a receipt only from a node with an accepted training proof in that epoch or the three before,
once per receiver, server and epoch, never from the server itself, and at most what a node can
serve in an epoch. So the book keeps what is owed and the economy signs it (EconomyService
``sign_receipts``) once this node has trained; what does not fit one receipt's bound is carried
to the next epoch. Thread-safe: the data service notes on the loop, the economy signs in its
executor.

The same book keeps a stage holder's receipts for async work: the batches of each async node's
pseudo-gradient its outer steps merged, keyed by (contributor, first layer, layers), which the
economy signs as ``async_receipt`` records (handlers ``_async_receipt``, the same guards).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)

MAX_SERVERS = 256
"""Servers owed at once: a node fetches only from peers it chose, and the genesis corpus has a
bounded number of shards, so more is a bug; the oldest are dropped."""


class ReceiptBook(Generic[Key]):
    def __init__(self, own_address: str, party: Callable[[Key], str] = str) -> None:
        """``party(key)``: the address a key pays (a data server's address is the key itself)."""
        self._own, self._party = own_address, party
        self._owed: dict[Key, int] = {}  # key -> work received and not yet signed for
        self._signed: dict[Key, int] = {}  # key -> work signed for (lifetime)
        self._lock = threading.Lock()

    def note(self, served: Iterable[tuple[Key, int]]) -> None:
        """Record ``(key, amount)`` pairs of work this node received and verified (samples of a
        data server, batches of an async node merged)."""
        with self._lock:
            for server, samples in served:
                if self._party(server) == self._own or samples <= 0:
                    continue  # a node never signs for itself (the ledger refuses it anyway)
                self._owed[server] = self._owed.get(server, 0) + int(samples)
                while len(self._owed) > MAX_SERVERS:
                    self._owed.pop(next(iter(self._owed)))

    def due(self, cap: int) -> list[tuple[Key, int]]:
        """What to sign now: per key, the work owed, at most ``cap`` (one receipt's bound)."""
        with self._lock:
            return [(server, min(samples, cap)) for server, samples in sorted(self._owed.items()) if samples > 0]

    def signed(self, server: Key, samples: int) -> None:
        """A receipt for ``samples`` of ``server``'s work was accepted by this node's ledger."""
        with self._lock:
            left = self._owed.get(server, 0) - samples
            if left > 0:
                self._owed[server] = left
            else:
                self._owed.pop(server, None)
            self._signed[server] = self._signed.get(server, 0) + samples

    def owed(self) -> dict[Key, int]:
        with self._lock:
            return dict(self._owed)

    def signed_total(self) -> dict[Key, int]:
        with self._lock:
            return dict(self._signed)
