"""Taking over a dead driver's data stream: its progress record, who takes over, the adopted stream.

Each driver publishes a :class:`DriverProgress` (signed by it, in the DHT): how many of its planned
steps its stage had folded into a DiLoCo round, its data position at that point, and its state
(``training``, ``settling`` = its own steps are done and it waits for the other drivers to finish
or die, ``done``). A driver that stops heart-beating before ``done`` loses the inner steps it made
since its last round (they lived only in its own copy of stage 0), so the surviving driver picked
by :func:`choose_taker` continues its stream from the published position: the same batches (the
data order is the dead driver's seed), to the end of its plan. Nothing it planned is lost; the
steps it committed after its last round are trained again and reported so.

Pure logic; the runtime's TakeoverService (runtime/takeover_service.py) does the DHT part.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

RECORD_VERSION = 1
MAX_PLANNED_STEPS = 1 << 40
"""A published plan above this is nonsense (a peer's field is untrusted)."""
STATES = ("training", "settling", "done")


class ProgressError(ValueError):
    """A progress record that does not parse or whose numbers are out of range."""


@dataclass(frozen=True)
class DriverProgress:
    driver: str
    position: int  # steps of this session's plan that a closed DiLoCo round holds
    planned: int | None  # steps this session plans; None = unbounded (nothing to take over)
    loader: dict[str, Any]  # the data position right after step ``position`` (BatchLoader.state_dict)
    state: str = "training"

    @property
    def remaining(self) -> int | None:
        return None if self.planned is None else self.planned - self.position

    def to_bytes(self) -> bytes:
        return json.dumps({"v": RECORD_VERSION, "driver": self.driver, "position": self.position,
                           "planned": self.planned, "loader": self.loader, "state": self.state},
                          sort_keys=True).encode()

    @classmethod
    def parse(cls, raw: bytes, driver: str) -> DriverProgress:
        """The record ``driver`` published (the caller checked the DHT signature is the driver's)."""
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProgressError(f"progress record is not JSON: {exc}") from exc
        if not isinstance(record, dict) or record.get("v") != RECORD_VERSION:
            raise ProgressError(f"progress record must be an object with v={RECORD_VERSION}")
        position, planned, loader, state = (record.get(k) for k in ("position", "planned", "loader", "state"))
        if record.get("driver") != driver:
            raise ProgressError("progress record names another driver than its publisher")
        if not _int(position) or position < 0 or position > MAX_PLANNED_STEPS:
            raise ProgressError(f"progress position {position!r} out of range")
        if planned is not None and (not _int(planned) or not position <= planned <= MAX_PLANNED_STEPS):
            raise ProgressError(f"planned steps {planned!r} out of range")
        if not isinstance(loader, dict) or state not in STATES:
            raise ProgressError("progress record needs a loader position and a known state")
        return cls(driver, position, planned, dict(loader), state)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def choose_taker(dead: str, candidates: Iterable[str]) -> str | None:
    """The live driver that takes over ``dead``'s stream: every driver computes the same answer from
    the same candidates (rendezvous hashing), so one takes it and the load spreads over many."""
    ranked = sorted((hashlib.sha256(f"{dead}|{c}".encode()).digest(), c) for c in set(candidates) if c != dead)
    return ranked[0][1] if ranked else None


@dataclass
class DataStream:
    """A sequence of planned steps a driver trains: its own, or one it adopted from a dead driver."""

    batches: Callable[[], torch.Tensor]
    planned: int | None  # steps in the stream from ``start``; None = unbounded
    adopted_from: str = ""  # "" = this driver's own stream
    start: int = 0  # the position in the original driver's plan where this stream begins
    done: int = 0
    pending: torch.Tensor | None = None  # the batch of the step in flight (a stalled step retries it)

    @property
    def exhausted(self) -> bool:
        return self.planned is not None and self.done >= self.planned

    def next_batch(self) -> torch.Tensor:
        if self.pending is None:
            self.pending = self.batches()
        return self.pending

    def committed(self) -> None:
        self.pending = None
        self.done += 1

    def report(self) -> dict[str, Any]:
        """What the run summary says of an adopted stream."""
        return {"driver": self.adopted_from, "from_step": self.start, "steps": self.done, "planned": self.planned}
