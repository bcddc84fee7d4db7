"""The training transport interface implemented on the P2P node (the only place both meet).

Stage calls go through the P2P node's swarm router: first restricted to the preferred peer (the
quorum's member, so one step's micro-batches stay on one holder), then, if that peer is gone,
to any other holder of exactly the same stage. The router bans the failed peer with capped
backoff and counts the failover. Every call is a typed stage-protocol message (stage_protocol.py):
Forward/Backward streams, Commit/Finish unary calls, Exchange for pseudo-gradients (into a mailbox
per round) and Weights downloads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import torch

from app.node.p2p.errors import BUSY_PREFIX, P2PError, PeerBusy, PeerRejected, ProtocolMismatch, RpcRefusal
from app.node.p2p.node import P2PNode
from app.node.p2p.protocol import pb2
from app.node.p2p.records import PeerRecord
from app.node.runtime import stage_protocol
from app.node.training.transport import (
    CohortPayload,
    GiveUp,
    Meta,
    RetryElsewhere,
    StageHandler,
    StageReply,
    Tensors,
    TransportError,
    WaitAndRetry,
)

log = logging.getLogger("neuroshard.runtime.transport")

MAX_ASYNC_PER_RANGE = 64
"""Async contributions held per layer range between two syncs (one per sender)."""

MAX_MAILBOX_ROUNDS = 8
"""Rounds ahead of ours a cohort member's payload is kept for; one further ahead is refused."""


HEARTBEATS_MISSED = 3.0
"""A holder whose announcement was not refreshed for this many heartbeat intervals has stopped
heart-beating (it is still listed until its TTL, the heartbeat timeout, runs out)."""


def peer_id(record: PeerRecord) -> str:
    return record.node_id.hex()


def heartbeat_fresh(record: PeerRecord, heartbeat_interval_s: float, now: float | None = None) -> bool:
    """The holder refreshed its announcement within the last few heartbeats (it is alive)."""
    now = time.time() if now is None else now
    return now - record.timestamp <= HEARTBEATS_MISSED * heartbeat_interval_s


def as_refusal(exc: TransportError) -> RpcRefusal:
    """The gRPC answer to a training error raised while serving a request: GiveUp keeps the
    status it names; WaitAndRetry and RetryElsewhere (paused, swapping, another stage now) become
    a busy UNAVAILABLE, which the caller's router reads as PeerBusy (rest the peer, try a replica)."""
    if isinstance(exc, GiveUp):
        code = grpc.StatusCode.__members__.get(exc.status, grpc.StatusCode.ABORTED)
        return RpcRefusal(code, str(exc)[:400])
    return RpcRefusal(grpc.StatusCode.UNAVAILABLE, BUSY_PREFIX + str(exc)[:400])


MAX_EXACT_FLOAT_ID = 1 << 24
"""float32 holds every integer below 2^24 exactly: ample for token ids (vocabularies of 10^5)."""


def to_wire(tensors: Tensors) -> dict[str, torch.Tensor]:
    """Tensors as the codec's ``t0, t1, ...``; token ids (int64, which the wire codec does not
    carry) travel as float32 under ``i<n>`` and are restored exactly by ``from_wire``."""
    out = {}
    for i, t in enumerate(tensors):
        if t.dtype == torch.long:
            out[f"i{i}"] = t.detach().to(torch.float32).contiguous()
        else:
            out[f"t{i}"] = t.detach().contiguous()
    return out


def from_wire(tensors: dict[str, torch.Tensor]) -> Tensors:
    out: Tensors = []
    for i in range(len(tensors)):
        if f"t{i}" in tensors:
            out.append(tensors[f"t{i}"])
        elif f"i{i}" in tensors:
            ids = tensors[f"i{i}"]
            if not ids.is_floating_point() or not bool(((ids >= 0) & (ids < MAX_EXACT_FLOAT_ID)
                                                        & (ids == ids.round())).all()):
                raise GiveUp(f"tensor i{i} must hold non-negative integer token ids")
            out.append(ids.to(torch.long))
        else:
            raise GiveUp("tensor names must be t0/i0, t1/i1, ... without gaps")
    return out


class P2PStageTransport:
    """Training's StageTransport over the node's swarm router, which owns holders, bans,
    re-routing and the back-off between replays; ``attempts`` is how many times a failed
    micro-batch or commit is replayed before the driver's step stalls."""

    def __init__(self, node: P2PNode, timeout_s: float | None = None, attempts: int = 4) -> None:
        self.node = node
        self.timeout_s = timeout_s
        self.attempts = attempts

    def holders(self, layer_start: int) -> list[str]:
        return [peer_id(r) for r in self.node.router.cached_holders(layer_start) if r.layer_start == layer_start]

    def retry_delay(self, attempt: int) -> float | None:
        return None if attempt + 1 >= self.attempts else self.node.router.replay_delay(attempt)

    async def call(self, layer_start: int, op: str, meta: Meta, tensors: Tensors, *,
                   prefer: str | None = None, exclude: frozenset[str] = frozenset()) -> StageReply:
        request = stage_protocol.stage_request(op, layer_start, meta)
        try:
            result = await self.node.router.run_stage(
                layer_start, op, request, to_wire(tensors), prefer=bytes.fromhex(prefer) if prefer else None,
                exclude=frozenset(bytes.fromhex(p) for p in exclude), timeout=self.timeout_s)
        except (PeerRejected, ProtocolMismatch) as exc:
            code = exc.code.name if isinstance(exc, PeerRejected) else "FAILED_PRECONDITION"
            raise GiveUp(str(exc), prefer, code) from exc
        except PeerBusy as exc:
            raise WaitAndRetry(f"the holders of the stage at layer {layer_start} are busy: {exc}", None) from exc
        except P2PError as exc:
            raise RetryElsewhere(f"no holder of the stage at layer {layer_start} answered: {exc}", prefer) from exc
        try:
            return StageReply(peer_id(result.peer), stage_protocol.reply_meta(result.meta), from_wire(result.tensors))
        except (GiveUp, AttributeError) as exc:  # the holder's answer does not parse: not its to give
            raise RetryElsewhere(f"{peer_id(result.peer)[:12]} answered nonsense: {exc}", peer_id(result.peer)) from exc


def stage_server(handler: StageHandler, *, busy: Callable[[], str | None] | None = None,
                 first_layer: Callable[[], int] | None = None) -> Any:
    """Wrap a training StageHandler as the P2P node's stage handler: typed requests in (checked,
    driver = the verified caller), typed replies out, training errors as their gRPC status.

    ``busy()`` returns why this node serves no stage work right now (or None); such a request is
    refused as busy (:class:`WaitAndRetry`), as is one for a stage this node no longer
    serves (``first_layer()`` is the stage it serves now)."""

    async def serve(caller: bytes, kind: str, request: Any, tensors: dict[str, torch.Tensor]
                    ) -> tuple[Any, dict[str, torch.Tensor]]:
        try:
            op, layer, meta = stage_protocol.stage_call(kind, request, caller)
        except GiveUp as exc:
            raise as_refusal(exc) from exc
        reason = busy() if busy is not None else None
        if reason is not None:
            raise as_refusal(WaitAndRetry(reason))
        if first_layer is not None and layer != first_layer():
            raise as_refusal(RetryElsewhere(f"this node now serves the stage at layer {first_layer()}, not {layer}"))
        try:
            out_meta, out = await handler(op, meta, from_wire(tensors))
        except GiveUp as exc:
            raise as_refusal(exc) from exc
        except TransportError as exc:
            # The step was handled but what follows a commit (the DiLoCo round) could not reach
            # a peer: a retried commit is answered "already", so the caller may simply retry.
            raise as_refusal(WaitAndRetry(f"stage could not finish the request: {str(exc)[:300]}")) from exc
        except (ValueError, KeyError, IndexError, TypeError, RuntimeError) as exc:
            raise as_refusal(GiveUp(f"stage refused the request: {str(exc)[:300]}")) from exc
        return stage_protocol.stage_reply(op, out_meta), to_wire(out)

    return serve


def weights_server(fn: Callable[[bytes, Meta], Awaitable[dict[str, torch.Tensor]]]
                   ) -> Callable[[bytes, Any], Awaitable[dict[str, torch.Tensor]]]:
    """Wrap a weights handler ``fn(caller, {"range", "diloco"})``: a typed, checked request in,
    training errors out as their status."""

    async def serve(caller: bytes, request: Any) -> dict[str, torch.Tensor]:
        try:
            return await fn(caller, stage_protocol.parse_weights(request))
        except TransportError as exc:
            raise as_refusal(exc) from exc

    return serve


class P2PCohort:
    """Pseudo-gradient exchange with the other holders of a layer range, via per-round mailboxes.

    Membership is proven, not claimed: a contribution is taken only from a caller whose signed
    layer announcement (the DHT registry) shows it holding exactly this range, for this round or
    the few ahead of it, at most one per node per round; the exchange merges only the holders it
    asked; a claimed batch count is bounded by the round's length (no holder trains more inner
    steps in a round than that), so no one buys weight by saying a bigger number.
    """

    def __init__(self, node: P2PNode, holds: Callable[[], tuple[int, int]] | None = None,
                 position: Callable[[], tuple[int, int]] | None = None,
                 on_idle_payload: Callable[[str, tuple[int, int]], None] | None = None,
                 round_length: Callable[[], int] | None = None,
                 arch: Callable[[], str] | None = None,
                 training: Callable[[int], bool] | None = None) -> None:
        self.node = node
        self.arch = arch  # our architecture tag (arch_guard.arch_tag): a payload of another is refused
        self.holds = holds  # the range this node serves now; payloads for others are refused
        self.position = position  # (DiLoCo round, inner steps done in it) of our stage
        self.training = training  # whether our payload for a round will come (StageSync.will_send_for)
        self.on_idle_payload = on_idle_payload  # a replica trained while we were idle
        self.round_length = round_length  # inner steps per DiLoCo round: the most a member can claim
        self.me = node.node_id.hex()
        self._boxes: dict[tuple[tuple[int, int], int], dict[str, CohortPayload]] = {}
        self._arrived = asyncio.Event()
        self._async: dict[tuple[int, int], dict[str, CohortPayload]] = {}
        self._ahead: dict[tuple[int, int], list[str]] = {}
        self._latest: dict[tuple[int, int], tuple[int, str]] = {}  # newest round a member sent, and who

    def latest_round(self, layer_range: tuple[int, int]) -> tuple[int, str] | None:
        """The newest DiLoCo round a cohort member (a proven holder) sent us a payload for, and who."""
        return self._latest.get(tuple(layer_range))

    def ahead_of_us(self, layer_range: tuple[int, int]) -> list[str]:
        return self._ahead.pop(tuple(layer_range), [])

    def take_async(self, layer_range: tuple[int, int]) -> list[CohortPayload]:
        """Async contributions received for ``layer_range`` since the last call (one per sender)."""
        inbox = self._async.pop(tuple(layer_range), {})
        return [inbox[k] for k in sorted(inbox)]

    async def handle(self, caller: bytes, request: Any, tensors: dict[str, torch.Tensor]
                     ) -> tuple[Any, dict[str, torch.Tensor]]:
        """Sync handler: a peer delivers its payload for a round (a typed, checked SyncRequest);
        the sender is the verified caller, never a name in the message."""
        sender = caller.hex()
        try:
            layer_range, round_, batches, age, is_async = stage_protocol.parse_sync(request)
        except GiveUp as exc:
            raise as_refusal(exc) from exc
        if self.holds is not None and tuple(self.holds()) != layer_range:
            raise as_refusal(GiveUp(f"this node does not hold layers {layer_range} (any more)"))
        if self.arch is not None and (theirs := stage_protocol.request_arch(request)) != (mine := self.arch()):
            # DESIGN.md §8: weights of different versions never mix. Retryable: the sender may be
            # on its way to our version (or we to its), and the round goes on without its payload.
            raise as_refusal(RetryElsewhere(f"this node trains architecture {mine}, the pseudo-gradient is for "
                                            f"{theirs[:60] or 'an untagged architecture'}; versions never mix"))
        if self.round_length is not None:
            batches = min(batches, max(1, self.round_length()))
        payload = CohortPayload(sender, round_, batches, age, dict(tensors))
        if is_async:  # an async (T5) node's snapshot work: folded in at the next round
            inbox = self._async.setdefault(layer_range, {})
            if len(inbox) >= MAX_ASYNC_PER_RANGE and sender not in inbox:
                raise as_refusal(WaitAndRetry("too many async contributions waiting; retry after the next sync"))
            inbox[sender] = payload
            return stage_protocol.sync_reply("ok", 0, 0), {}
        my_round, my_inner = self.position() if self.position is not None else (round_, 1)
        if round_ < my_round:
            return stage_protocol.sync_reply("stale", my_round, my_inner), {}  # we closed that round already
        if round_ > my_round + MAX_MAILBOX_ROUNDS:
            raise as_refusal(GiveUp(f"round {round_} is more than {MAX_MAILBOX_ROUNDS} rounds ahead of this "
                                    f"node's round {my_round}", status="OUT_OF_RANGE"))
        box = self._boxes.get((layer_range, round_), {})
        if sender in box:
            raise as_refusal(GiveUp(f"{sender[:12]} already contributed to round {round_}", status="ALREADY_EXISTS"))
        if not await self._holds_range(caller, layer_range):
            raise as_refusal(GiveUp(f"{sender[:12]} is not a registered holder of layers {layer_range}: "
                                    "only the cohort's members contribute", status="PERMISSION_DENIED"))
        if my_inner == 0 and self.on_idle_payload is not None:
            self.on_idle_payload(sender, layer_range)
        if round_ >= self._latest.get(layer_range, (-1, ""))[0]:
            self._latest[layer_range] = (round_, sender)
        self._boxes.setdefault((layer_range, round_), {})[sender] = payload
        self._arrived.set()
        return stage_protocol.sync_reply("ok", my_round, my_inner,
                                         training=self.training is not None and self.training(round_)), {}

    async def _holds_range(self, caller: bytes, layer_range: tuple[int, int]) -> bool:
        """The signed layer registry shows ``caller`` holding exactly ``layer_range`` now."""
        try:
            records = await self.node.who_holds(layer_range[0])
        except P2PError:
            return False
        return any(r.node_id == caller and (r.layer_start, r.layer_end) == layer_range for r in records)

    async def exchange(self, layer_range: tuple[int, int], round_: int, payload: CohortPayload,
                       timeout_s: float) -> list[CohortPayload]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        records = [r for r in await self.node.who_holds(layer_range[0])
                   if (r.layer_start, r.layer_end) == tuple(layer_range) and peer_id(r) != self.me]
        request = stage_protocol.sync_request(layer_range, round_, payload.batches, payload.age_s,
                                              arch=self.arch() if self.arch is not None else "")
        results = await asyncio.gather(*(self.node.call_sync(r, request, dict(payload.tensors), timeout_s)
                                         for r in records), return_exceptions=True)
        # Wait only for peers in this round that trained in it or whose driver is about to: an idle
        # replica (no driver routes to it) or one already past this round would never send, and
        # waiting costs every driver. A driver that has not committed its first step of the round
        # yet (it started a little later), or is still closing the round before, will send:
        # closing without it would drop its work.
        waiting = {peer_id(r) for r, res in zip(records, results, strict=True)
                   if not isinstance(res, BaseException) and _will_send(res[0], round_)}
        self._ahead[tuple(layer_range)] = [peer_id(r) for r, res in zip(records, results, strict=True)
                                           if not isinstance(res, BaseException) and _status(res[0]) == pb2.STAGE_STALE]
        box = self._boxes.setdefault((tuple(layer_range), round_), {})
        while not waiting <= set(box) and loop.time() < deadline:
            self._arrived.clear()
            try:
                async with asyncio.timeout(max(0.01, deadline - loop.time())):
                    await self._arrived.wait()
            except asyncio.TimeoutError:
                break
        asked = {peer_id(r) for r in records}  # a payload from anyone else is not merged
        got = [box[p] for p in sorted(box) if p in asked]
        self._boxes.pop((tuple(layer_range), round_), None)
        for key in [k for k in self._boxes if k[0] == tuple(layer_range) and k[1] < round_]:
            del self._boxes[key]  # rounds we closed: nobody will collect them
        return got


def _status(reply: Any) -> int:
    return reply.status if isinstance(reply, pb2.SyncReply) else pb2.STAGE_STATUS_UNSPECIFIED


def _will_send(reply: Any, round_: int) -> bool:
    """The peer is in this round and trained in it, or it is in this round or still in an earlier
    one and says its payload for this round will come (a typed SyncReply; anything else: no)."""
    if _status(reply) != pb2.STAGE_OK:
        return False
    return (reply.round == round_ and reply.inner > 0) or (reply.round <= round_ and reply.training)


SYNC_POSITION = "__sync_position__"
"""Extra float32 tensor in a weights answer: [DiLoCo round, inner steps into it], so a new holder
joins its cohort's rounds in step."""


class P2PWeights:
    """Download a layer range's current weights (and DiLoCo position) from a live holder."""

    def __init__(self, node: P2PNode, timeout_s: float = 60.0, arch: str = "") -> None:
        """``arch``: the architecture tag the weights must be of (a holder of another refuses)."""
        self.node = node
        self.timeout_s = timeout_s
        self.arch = arch
        self.last_position: tuple[int, int] | None = None

    async def fetch_diloco(self, layer_range: tuple[int, int], peer: str
                           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int] | None:
        """``peer``'s DiLoCo anchor, outer momentum and round (to rejoin its cohort), or None."""
        for record in await self.node.who_holds(layer_range[0]):
            if peer_id(record) != peer or (record.layer_start, record.layer_end) != tuple(layer_range):
                continue
            try:
                flat = await self.node.fetch_weights(
                    record, stage_protocol.weights_request(layer_range, diloco=True, arch=self.arch), self.timeout_s)
            except P2PError as exc:
                log.info("DiLoCo state download from %s failed: %s", peer[:12], exc)
                return None
            position = flat.pop(SYNC_POSITION, None)
            anchor = {k[len("anchor."):]: v for k, v in flat.items() if k.startswith("anchor.")}
            momentum = {k[len("momentum."):]: v for k, v in flat.items() if k.startswith("momentum.")}
            if position is None or position.numel() != 2 or not anchor or len(anchor) != len(momentum):
                return None
            return anchor, momentum, max(0, int(position[0].item()))
        return None

    async def fetch(self, layer_range: tuple[int, int], *, exclude: frozenset[str] = frozenset(),
                    prefer: str | None = None) -> dict[str, torch.Tensor]:
        interval = self.node.config.heartbeat_interval_s
        records = [r for r in await self.node.who_holds(layer_range[0])
                   if (r.layer_start, r.layer_end) == tuple(layer_range) and peer_id(r) not in exclude
                   and r.node_id != self.node.node_id and heartbeat_fresh(r, interval)]
        records.sort(key=lambda r: peer_id(r) != prefer)
        for record in records:
            try:
                state = await self.node.fetch_weights(record, stage_protocol.weights_request(layer_range, arch=self.arch),
                                                      self.timeout_s)
            except P2PError as exc:
                log.info("weights download from %s failed: %s", peer_id(record)[:12], exc)
                continue
            position = state.pop(SYNC_POSITION, None)
            if position is not None and position.numel() == 2 and bool(torch.isfinite(position).all()):
                rounds, inner = (int(v) for v in position.tolist())
                self.last_position = (max(0, rounds), max(0, inner))
            return state
        raise RetryElsewhere(f"no live holder of layers {layer_range} to download from")
