"""Swarm router: run a pipeline stage on a live holder, failing over to replicas (seed 002).

For a stage it picks a holder of the layer at random, weighted by capacity over measured latency,
so fast well-provisioned nodes get more work without starving the rest. If that peer errors, or
stays silent for ``failover_timeout_s`` (200 ms by default, DESIGN.md §4; servers send keepalives
every 50 ms while they work), it sends the same micro-batch to another replica: a hedged retry in
which the first good answer wins, so no work is lost. A peer that failed is banned with capped
exponential backoff (Petals: 1 s doubling to 60 s); a success clears its record.

It is the node's one owner of retries, as Petals' sequence manager is: bans, re-routing, the one
holder cache, and the delay before a caller replays failed work (``replay_delay``). The training
transport and the pipeline driver ask it; neither keeps a cache or a back-off of its own.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import torch

from app.node.p2p.aio import cancel_and_wait
from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import NoHolders, P2PError, PeerBusy, PeerRejected, ProtocolMismatch
from app.node.p2p.records import PeerRecord

DEFAULT_LATENCY_MS = 50.0
"""Latency assumed for a holder never measured: near a LAN peer, so new nodes get tried."""
REPLAY_BASE_S, REPLAY_MAX_S = 0.05, 2.0
"""Back-off between a caller's replays of failed work: 50 ms doubling, capped at 2 s."""


@dataclass(frozen=True)
class StageResult:
    peer: PeerRecord
    meta: Any  # the peer's answer: a typed stage-protocol reply, or a JSON object
    tensors: dict[str, torch.Tensor]


@dataclass(frozen=True)
class FailoverEvent:
    layer_start: int
    failed_peer: bytes
    reason: str


class StageCaller(Protocol):
    async def who_holds(self, layer: int) -> list[PeerRecord]: ...

    def call_stage_hedged(self, peer: PeerRecord, kind: str, meta: Any, tensors: dict[str, torch.Tensor],
                          timeout: float, on_silence: Callable[[], None]
                          ) -> Awaitable[tuple[dict[str, Any], dict[str, torch.Tensor]]]: ...


@dataclass
class _Ban:
    until: float = 0.0
    backoff: float = 0.0


class SwarmRouter:
    def __init__(self, caller: StageCaller, config: P2PConfig,
                 on_failover: Callable[[FailoverEvent], None] | None = None) -> None:
        self.caller = caller
        self.config = config
        self.on_failover = on_failover
        self.failovers = 0
        self._bans: dict[bytes, _Ban] = {}
        self._holders: dict[int, tuple[float, list[PeerRecord]]] = {}

    async def holders(self, layer: int, *, fresh: bool = False) -> list[PeerRecord]:
        """Holders of ``layer`` from the registry, cached for ``holders_cache_s`` (the node's one
        holder cache): a DHT lookup per micro-batch would add its latency to every stage; dead
        holders are caught by bans. ``fresh`` looks again (after every cached holder failed); an
        empty answer is never reused."""
        now = time.monotonic()
        cached = self._holders.get(layer)
        if not fresh and cached is not None and cached[1] and now - cached[0] < self.config.holders_cache_s:
            return cached[1]
        found = await self.caller.who_holds(layer)
        self._holders[layer] = (now, found)
        return found

    def cached_holders(self, layer: int) -> list[PeerRecord]:
        """What the last lookup of ``layer`` found (no lookup; may be empty or stale)."""
        return self._holders.get(layer, (0.0, []))[1]

    @staticmethod
    def replay_delay(attempt: int) -> float:
        """How long a caller waits before replaying work that failed ``attempt + 1`` times
        (capped exponential, as Petals' sequence manager's retry delay): the stage's holders were
        all tried; a ban expires or a replica joins meanwhile."""
        return min(REPLAY_MAX_S, REPLAY_BASE_S * 2 ** min(attempt, 16))

    # ------------------------------------------------------------------ bans
    def is_banned(self, node_id: bytes, now: float | None = None) -> bool:
        ban = self._bans.get(node_id)
        return ban is not None and ban.until > (time.monotonic() if now is None else now)

    def rest(self, node_id: bytes) -> float:
        """Skip a busy peer for ``ban_initial_s`` (a paused volunteer's node): it answered, so
        unlike ``ban`` the wait never grows, and a node resumed after an hour is used again within
        a second, not after a minute of backoff earned while it was paused."""
        ban = self._bans.setdefault(node_id, _Ban())
        ban.backoff = 0.0
        ban.until = time.monotonic() + self.config.ban_initial_s
        return self.config.ban_initial_s

    def ban(self, node_id: bytes) -> float:
        """Ban after a failure: 1 s, then doubling per consecutive failure, capped at 60 s."""
        ban = self._bans.setdefault(node_id, _Ban())
        ban.backoff = min(self.config.ban_max_s, ban.backoff * 2 if ban.backoff else self.config.ban_initial_s)
        ban.until = time.monotonic() + ban.backoff
        return ban.backoff

    def clear(self, node_id: bytes) -> None:
        self._bans.pop(node_id, None)

    # ------------------------------------------------------------------ choice
    @staticmethod
    def weight(record: PeerRecord) -> float:
        latency = record.latency_ms if record.latency_ms is not None else DEFAULT_LATENCY_MS
        return max(record.capacity, 1e-3) / (latency + 5.0)

    def order(self, holders: list[PeerRecord], rng: random.Random | None = None) -> list[PeerRecord]:
        """Weighted random order without replacement (Efraimidis-Spirakis keys u^(1/w))."""
        rng = rng or random
        return sorted(holders, key=lambda r: rng.random() ** (1.0 / self.weight(r)), reverse=True)

    # ------------------------------------------------------------------ running a stage
    async def run_stage(self, layer_start: int, kind: str, meta: Any, tensors: dict[str, torch.Tensor],
                        *, prefer: bytes | None = None, exclude: set[bytes] | frozenset[bytes] = frozenset(),
                        timeout: float | None = None) -> StageResult:
        """Run the call on a holder of the stage starting at ``layer_start``: ``prefer`` alone first
        when it is a live, un-banned holder (one step's micro-batches stay on one holder), then the
        others, hedged; once every cached holder failed, the registry is asked again. A refusal by
        the peers (PeerRejected / ProtocolMismatch) is raised as it is; busy holders only: PeerBusy;
        otherwise NoHolders."""
        timeout = self.config.stage_timeout_s if timeout is None else timeout
        errors: list[P2PError] = []
        tried: set[bytes] = set(exclude)
        for fresh in (False, True):
            # a stage is named by its first layer: a holder of [0, 4) is not the stage that starts at 2
            holders = [r for r in await self.holders(layer_start, fresh=fresh) if r.layer_start == layer_start
                       and r.node_id not in tried and not self.is_banned(r.node_id)]
            preferred = [r for r in holders if r.node_id == prefer]
            passes = [preferred, [r for r in holders if r.node_id != prefer]] if preferred else [holders]
            for group in passes:
                if not group:
                    continue
                result = await self._hedged(layer_start, kind, meta, tensors, group, timeout, errors, tried)
                if result is not None:
                    return result
                if errors and all(isinstance(e, PeerRejected | ProtocolMismatch) for e in errors):
                    raise errors[-1]  # the request itself was refused: another holder will say the same
        if errors and all(isinstance(e, PeerBusy) for e in errors):
            raise PeerBusy(f"every holder of layer {layer_start} is busy; last: {errors[-1]}")
        if not errors:
            raise NoHolders(f"no live, un-banned peer holds layer {layer_start}; "
                            "wait for holders to join or for bans to expire")
        raise NoHolders(f"every holder of layer {layer_start} tried failed; last error: {errors[-1]}")

    async def _hedged(self, layer_start: int, kind: str, meta: Any, tensors: dict[str, torch.Tensor],
                      holders: list[PeerRecord], timeout: float, errors: list[P2PError],
                      tried: set[bytes]) -> StageResult | None:
        """Try ``holders`` (weighted order, at most max_stage_attempts), hedging a silent one; the
        first good answer wins. Failures are appended to ``errors``; None when all failed."""
        queue = self.order(holders)[: self.config.max_stage_attempts]
        running: dict[asyncio.Future[Any], PeerRecord] = {}
        wake = asyncio.Event()

        def launch() -> None:
            record = queue.pop(0)
            tried.add(record.node_id)
            wake.clear()
            running[asyncio.ensure_future(self.caller.call_stage_hedged(
                record, kind, meta, tensors, timeout, lambda r=record: self._silent(r, layer_start, wake)))] = record

        launch()
        try:
            while running:
                waker = asyncio.ensure_future(wake.wait())
                done, _ = await asyncio.wait({*running, waker}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                if wake.is_set() and queue:
                    launch()  # hedge: the silent peer keeps its chance, a replica starts now
                wake.clear()
                for task in done - {waker}:
                    record = running.pop(task)
                    try:
                        out_meta, out_tensors = task.result()
                    except P2PError as exc:
                        errors.append(exc)
                        self._failed(record, layer_start, exc)
                        if queue:
                            launch()
                        continue
                    self.clear(record.node_id)
                    return StageResult(record, out_meta, out_tensors)
        finally:
            await cancel_and_wait(running)
        return None

    def _silent(self, record: PeerRecord, layer_start: int, wake: asyncio.Event) -> None:
        self._count(FailoverEvent(layer_start, record.node_id, "silent"))
        wake.set()

    def _failed(self, record: PeerRecord, layer_start: int, exc: P2PError) -> None:
        if isinstance(exc, PeerBusy):
            self.rest(record.node_id)  # alive, just not working now: back soon, no escalation
        elif not isinstance(exc, PeerRejected) or exc.code == grpc.StatusCode.DATA_LOSS:
            self.ban(record.node_id)  # a deliberate refusal is an answer, not a fault
        self._count(FailoverEvent(layer_start, record.node_id, str(exc)[:200]))

    def _count(self, event: FailoverEvent) -> None:
        self.failovers += 1
        if self.on_failover is not None:
            self.on_failover(event)
