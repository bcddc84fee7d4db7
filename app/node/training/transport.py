"""The transport interface training speaks, and an in-process implementation of it.

Training never opens a socket (DESIGN.md §1): it asks a :class:`StageTransport` to run an
operation on "whoever holds the stage starting at layer L", asks a :class:`CohortTransport` to
swap pseudo-gradients with the other holders of its layer range, and a :class:`WeightsSource`
for a live replica's weights. ``app/node/runtime`` implements these over the P2P node's router;
:class:`LocalTransport` implements them in one process for tests and single-process baselines.

Failover happens *below* this interface: a call names a preferred peer (the quorum's member for
that stage) and the transport falls back to another live holder when that peer is gone. The
reply says who actually served it, so the pipeline can notice the route changed and make the new
holder catch up on the micro-batches it missed (pipeline.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

Meta = dict[str, Any]
Tensors = list[torch.Tensor]

# Stage operations (the "op" of a stage call). Forward and backward carry activations; commit and
# finish carry only metadata (below this interface each is a typed message of its own).
OP_FORWARD = "forward"
OP_BACKWARD = "backward"
OP_COMMIT = "commit"
OP_FINISH = "finish"


class TransportError(Exception):
    """Base of the errors a transport (or a stage handler) raises; the subclass names what the
    caller should do about it. ``peer`` is the holder that failed or refused, when known."""

    def __init__(self, message: str, peer: str | None = None) -> None:
        super().__init__(message)
        self.peer = peer


class RetryElsewhere(TransportError):
    """The holder is gone, failing, or serves another stage now: send the same request to another
    holder (the router bans the failed one); with none left, the step is retried later."""


class WaitAndRetry(TransportError):
    """The holder is alive but cannot take the request now (paused by its volunteer, swapping its
    stage, a vocabulary catching up, a DiLoCo round still open): retry the same request after a
    pause, on it or a replica; no ban escalates."""


class GiveUp(TransportError):
    """The request was refused for what it is (malformed, out of range, not the caller's to make):
    sending it again, anywhere, gets the same answer. ``status`` names the gRPC status the edge
    answers with: ABORTED (refused by this stage), INVALID_ARGUMENT (malformed or out of range),
    PERMISSION_DENIED (not the caller's to make), FAILED_PRECONDITION (incompatible version)."""

    def __init__(self, message: str, peer: str | None = None, status: str = "ABORTED") -> None:
        super().__init__(message, peer)
        self.status = status


@dataclass(frozen=True)
class StageReply:
    peer: str
    meta: Meta
    tensors: Tensors


@dataclass(frozen=True)
class CohortPayload:
    """One member's pseudo-gradient for a sync round, as it travels between holders."""

    node_id: str
    round: int
    batches: int
    age_s: float
    tensors: Mapping[str, torch.Tensor]


class StageTransport(Protocol):
    def holders(self, layer_start: int) -> list[str]:
        """Live peers that hold the stage starting at ``layer_start`` (may be empty)."""

    async def call(self, layer_start: int, op: str, meta: Meta, tensors: Tensors, *,
                   prefer: str | None = None, exclude: frozenset[str] = frozenset()) -> StageReply:
        """Run ``op`` on ``prefer`` if it is alive, else on another holder not in ``exclude``.

        Raises RetryElsewhere when no holder answered, WaitAndRetry when the holders are busy,
        GiveUp when one refused the request."""

    def retry_delay(self, attempt: int) -> float | None:
        """Seconds to wait before replaying work that failed ``attempt + 1`` times, or None to give
        up: the transport's router owns this policy (bans, back-off, attempts); callers ask it
        rather than retrying on their own."""


class CohortTransport(Protocol):
    async def exchange(self, layer_range: tuple[int, int], round_: int, payload: CohortPayload,
                       timeout_s: float) -> list[CohortPayload]:
        """Send our payload to every other holder of ``layer_range`` and return theirs for the
        same round (whatever arrived within ``timeout_s``; ours is not included)."""

    def take_async(self, layer_range: tuple[int, int]) -> list[CohortPayload]:
        """Contributions async (T5) nodes sent for ``layer_range`` since the last call."""

    def ahead_of_us(self, layer_range: tuple[int, int]) -> list[str]:
        """Peers that had already closed the last exchanged round without us (we were late)."""


class WeightsSource(Protocol):
    async def fetch(self, layer_range: tuple[int, int], *, exclude: frozenset[str] = frozenset()
                    ) -> dict[str, torch.Tensor]:
        """The current state dict of a live holder of exactly ``layer_range``."""


StageHandler = Callable[[str, Meta, Tensors], Awaitable[tuple[Meta, Tensors]]]
SyncHandler = Callable[[CohortPayload], Awaitable[None]]
WeightsHandler = Callable[[tuple[int, int]], Awaitable[dict[str, torch.Tensor]]]


@dataclass
class _LocalPeer:
    stage_start: int
    layer_range: tuple[int, int]
    stage: StageHandler
    sync: SyncHandler | None = None
    weights: WeightsHandler | None = None
    alive: bool = True


@dataclass
class LocalTransport:
    """Every peer in one process: handlers are called directly, a killed peer stops answering.

    ``calls`` counts operations per peer so tests can see where work went; ``delay_s`` adds a
    fixed latency per stage call to imitate a network (and let 1F1B overlap show); ``attempts``
    is how many times failed work is tried in all before the driver's step stalls.
    """

    delay_s: float = 0.0
    attempts: int = 4
    peers: dict[str, _LocalPeer] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    failovers: int = 0
    _mailboxes: dict[tuple[str, int], dict[str, CohortPayload]] = field(default_factory=dict)
    async_inbox: dict[tuple[int, int], list[CohortPayload]] = field(default_factory=dict)

    def add_peer(self, peer_id: str, layer_range: tuple[int, int], stage: StageHandler, *,
                 sync: SyncHandler | None = None, weights: WeightsHandler | None = None) -> None:
        self.peers[peer_id] = _LocalPeer(layer_range[0], layer_range, stage, sync, weights)

    def kill(self, peer_id: str) -> None:
        self.peers[peer_id].alive = False

    def holders(self, layer_start: int) -> list[str]:
        return sorted(p for p, rec in self.peers.items() if rec.alive and rec.stage_start == layer_start)

    def retry_delay(self, attempt: int) -> float | None:
        """``attempts`` tries in all, with no wait: every peer is in this process."""
        return None if attempt + 1 >= self.attempts else 0.0

    async def call(self, layer_start: int, op: str, meta: Meta, tensors: Tensors, *,
                   prefer: str | None = None, exclude: frozenset[str] = frozenset()) -> StageReply:
        candidates = [p for p in self.holders(layer_start) if p not in exclude]
        if prefer is not None and prefer not in candidates and prefer in self.peers:
            self.failovers += 1  # the preferred peer is dead or excluded: a replica takes over
        if prefer in candidates:
            candidates.remove(prefer)
            candidates.insert(0, prefer)
        if not candidates:
            raise RetryElsewhere(f"no live holder of the stage at layer {layer_start}", prefer)
        peer = candidates[0]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.calls[peer] = self.calls.get(peer, 0) + 1
        out_meta, out_tensors = await self.peers[peer].stage(op, dict(meta), list(tensors))
        if not self.peers[peer].alive:  # killed while computing: the answer never arrives
            raise RetryElsewhere(f"{peer} died during {op}", peer)
        return StageReply(peer, out_meta, out_tensors)

    def cohort(self, peer_id: str) -> LocalCohort:
        return LocalCohort(self, peer_id)


@dataclass
class LocalCohort:
    """The CohortTransport of one peer of a LocalTransport (mailboxes keyed by round)."""

    net: LocalTransport
    me: str

    async def exchange(self, layer_range: tuple[int, int], round_: int, payload: CohortPayload,
                       timeout_s: float) -> list[CohortPayload]:
        others = [p for p, rec in self.net.peers.items()
                  if p != self.me and rec.alive and rec.layer_range == tuple(layer_range)]
        for peer in others:
            self.net._mailboxes.setdefault((peer, round_), {})[self.me] = payload
        box = self.net._mailboxes.setdefault((self.me, round_), {})
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(p not in box for p in others) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        return [box[p] for p in sorted(box) if p in others]

    def take_async(self, layer_range: tuple[int, int]) -> list[CohortPayload]:
        return self.net.async_inbox.pop(tuple(layer_range), [])

    def ahead_of_us(self, layer_range: tuple[int, int]) -> list[str]:
        return []

    async def fetch(self, layer_range: tuple[int, int], *, exclude: frozenset[str] = frozenset()
                    ) -> dict[str, torch.Tensor]:
        for peer, rec in sorted(self.net.peers.items()):
            if peer != self.me and peer not in exclude and rec.alive and rec.weights is not None \
                    and rec.layer_range == tuple(layer_range):
                return await rec.weights(tuple(layer_range))
        raise RetryElsewhere(f"no live holder of layers {layer_range} to download from")


def tensors_nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)
