"""Byte counters per traffic kind, for the devnet and the UI to print."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

KINDS = ("activations", "pseudo_gradients", "weights", "ledger", "data", "dht")


@dataclass
class TrafficStats:
    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    failovers: int = 0

    def add_sent(self, kind: str, nbytes: int) -> None:
        self.sent[kind] += nbytes

    def add_received(self, kind: str, nbytes: int) -> None:
        self.received[kind] += nbytes

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {"sent": {k: self.sent[k] for k in KINDS}, "received": {k: self.received[k] for k in KINDS}}
