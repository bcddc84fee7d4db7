"""Inference sessions served by a stage: the key/value cache of its layers, per client session.

As in Petals' servers, a session lives on each holder of a chain: the client opens it, sends the
prompt's inputs (prefill), then one position per token (decode), and each holder keeps only the
keys and values of its own layers. What a stage holds is bounded:

- at most ``max_sessions`` sessions, and their caches, reserved at open for the whole length the
  client asked for (positions x layers x keys+values x kv heads x head size x 4 bytes), within
  ``cache_bytes``; an open that does not fit is refused RESOURCE_EXHAUSTED, naming what is free;
- a session idle for ``idle_timeout_s`` is forgotten (the client rebuilds it from its history);
- a session belongs to the key that opened it: anyone else is answered NOT_FOUND;
- a step must say how many positions the client believes are cached (``position``): a repeated
  or skipped step is refused OUT_OF_RANGE instead of silently corrupting the cache;
- with a market (runtime/inference_market.py) Open quotes the price and checks the caller's
  balance before any work; every step that ends an input is one token charged (a ``more`` piece
  of a long prompt, exactly MAX_STEP_POSITIONS long, is not), paid by the signed transfer the
  next step carries: a step that would produce a token while an earlier one is unpaid is refused
  PERMISSION_DENIED before any compute, so a caller gets at most one token on credit, which
  Close's payment covers. The caller's own node is not charged.

The compute runs on the stage's executor under its lock, so it never interleaves with an optimizer
step; with inference mode off (``serving()`` false) every call is refused as busy, so the client
goes to another holder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import torch

from app.node.economics.pricing import Quote
from app.node.inference_limits import InferenceLimits
from app.node.model.shard import ModelShard, ShardCache
from app.node.p2p.errors import BUSY_PREFIX
from app.node.p2p.protocol import pb2
from app.node.p2p.services import INFERENCE_CLOSE, INFERENCE_OPEN, INFERENCE_STEP
from app.node.runtime.inference_market import InferenceMarket
from app.node.runtime.inference_protocol import (
    MAX_STEP_POSITIONS,
    check_common,
    check_range,
    parse_tensor,
    refuse,
    tensor_fields,
)
from app.node.training.stage import StageWorker

FLOAT_BYTES = 4


class ComputeShare:
    """A token bucket of compute seconds: it fills at ``share`` seconds per second of wall time, up
    to ``share x window``; each step's compute time is taken out after it ran. So over any long
    stretch inference computes at most ``share`` of the time, whatever the requests do."""

    def __init__(self, share: float, window_s: float, clock: Callable[[], float]) -> None:
        if not 0.0 < share <= 1.0 or window_s <= 0:
            raise ValueError("compute_share must be in (0, 1] and share_window_s positive")
        self.share, self.capacity, self._clock = share, share * window_s, clock
        self._level, self._at = self.capacity, clock()

    def available(self) -> float:
        """Compute seconds in the bucket now (negative after a long step: wait before the next)."""
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._at) * self.share)
        self._at = now
        return self._level

    def wait_s(self) -> float:
        """Wall seconds until the bucket is positive again (0 when a step may run now)."""
        level = self.available()
        return 0.0 if level > 0 else -level / self.share + 1e-3

    def spend(self, seconds: float) -> None:
        self.available()
        self._level -= max(0.0, seconds)


@dataclass
class _Session:
    owner: bytes
    max_length: int
    reserved: int
    last_used: float
    cache: ShardCache
    position: int = 0
    positions_served: int = 0
    computing: bool = False
    quote: Quote | None = None
    payer: str = ""
    tokens: int = 0  # steps that ended an input: one generated token each
    paid_tokens: int = 0  # tokens the caller's accepted payments cover
    paid: int = 0  # micro-NEURO those payments moved


@dataclass(frozen=True)
class Served:
    """One step served: who asked, how many positions, over how many layers (inference proofs)."""

    caller: bytes
    positions: int
    layers: int
    tokens: int
    """Generated tokens the step carried (1, or 0 for a 'more' piece of a long prompt)."""


def cache_bytes_per_position(shard: ModelShard) -> int:
    """Keys and values of one position in every layer this shard holds (float32)."""
    arch = shard.architecture
    first, last = shard.layer_range
    return (last - first) * 2 * arch.kv_heads * arch.head_dim * FLOAT_BYTES


@dataclass
class InferenceService:
    stage: Callable[[], StageWorker]
    """The stage this node serves now (a healing move replaces it; sessions on the old one end)."""
    limits: InferenceLimits = field(default_factory=InferenceLimits)
    serving: Callable[[], bool] = lambda: True
    clock: Callable[[], float] = time.monotonic
    on_served: Callable[[Served], None] | None = None
    market: InferenceMarket | None = None
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _sessions: dict[bytes, _Session] = field(default_factory=dict)
    _stage_of_sessions: StageWorker | None = None
    compute: ComputeShare | None = None
    """The compute budget inference draws on (built from ``limits``)."""

    def __post_init__(self) -> None:
        self.compute = ComputeShare(self.limits.compute_share, self.limits.share_window_s, self.clock)

    # ------------------------------------------------------------------ queries
    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def reserved_bytes(self) -> int:
        return sum(s.reserved for s in self._sessions.values())

    # ------------------------------------------------------------------ the handler
    async def handle(self, path: str, caller: bytes, request: object) -> object:
        """``services.Handlers.inference``: one verified, signed session call."""
        if not self.serving():
            raise refuse(BUSY_PREFIX + "this node does not serve inference now", grpc.StatusCode.UNAVAILABLE)
        stage = self.stage()
        if stage is not self._stage_of_sessions:  # the node moved to another stage: old caches are void
            self._sessions.clear()
            self._stage_of_sessions = stage
        self._expire()
        if path == INFERENCE_OPEN:
            return self._open(stage, caller, request)  # type: ignore[arg-type]
        if path == INFERENCE_STEP:
            return await self._step(stage, caller, request)  # type: ignore[arg-type]
        if path == INFERENCE_CLOSE:
            return await self._close(caller, request)  # type: ignore[arg-type]
        raise refuse(f"{path} is not an inference call", grpc.StatusCode.UNIMPLEMENTED)

    def _open(self, stage: StageWorker, caller: bytes, request: pb2.InferenceOpenRequest) -> pb2.InferenceOpenReply:
        session_id = check_common(request)
        shard = stage.shard
        arch = shard.architecture
        if (request.layer_start, request.layer_end) != shard.layer_range:
            raise refuse(f"this node serves layers {shard.layer_range}, not "
                         f"[{request.layer_start}, {request.layer_end})", grpc.StatusCode.NOT_FOUND)
        max_length = check_range("max_length", int(request.max_length), 1, arch.max_seq)
        if session_id in self._sessions:
            raise refuse("a session with this id is open already", grpc.StatusCode.ALREADY_EXISTS)
        reserved = max_length * cache_bytes_per_position(shard)
        free = self.limits.cache_bytes - self.reserved_bytes()
        if len(self._sessions) >= self.limits.max_sessions or reserved > free:
            raise refuse(f"no room for the session: {len(self._sessions)} of {self.limits.max_sessions} sessions "
                         f"open, {max(0, free)} bytes of cache free, {reserved} needed for {max_length} positions",
                         grpc.StatusCode.RESOURCE_EXHAUSTED)
        session = _Session(caller, max_length, reserved, self.clock(), shard.new_cache())
        reply = pb2.InferenceOpenReply(max_length=max_length, expires_after_ms=int(self.limits.idle_timeout_s * 1000))
        if self.market is not None and not self.market.is_own(caller):
            quote = self.market.quote(len(self._sessions) / self.limits.max_sessions, max_length)
            session.payer, session.quote = self.market.admit(caller, quote), quote
            reply.price_per_token, reply.quote_id = quote.price_per_token, quote.quote_id
            reply.provider, reply.max_tokens = quote.provider, quote.max_tokens
        self._sessions[session_id] = session
        return reply

    def _session(self, caller: bytes, session_id: bytes) -> _Session:
        session = self._sessions.get(session_id)
        if session is None or session.owner != caller:  # another caller learns nothing about it
            raise refuse("no such session here (expired, closed, or never opened)", grpc.StatusCode.NOT_FOUND)
        return session

    async def _step(self, stage: StageWorker, caller: bytes, request: pb2.InferenceStepRequest) -> pb2.InferenceStepReply:
        session = self._session(caller, check_common(request))
        shard = stage.shard
        arch = shard.architecture
        if request.position != session.position:
            raise refuse(f"the step starts at position {request.position}, the session is at {session.position}",
                         grpc.StatusCode.OUT_OF_RANGE)
        if shard.with_embedding:
            x = parse_tensor(request.input, request.data, dtype=torch.int64, shape=(1, None), what="input")
            if int(x.min()) < 0 or int(x.max()) >= arch.vocab:
                raise refuse(f"token ids must lie in [0, {arch.vocab - 1}]")
        else:
            x = parse_tensor(request.input, request.data, dtype=torch.float32, shape=(1, None, arch.hidden),
                             what="input")
        positions = x.shape[1]
        if request.more and positions != MAX_STEP_POSITIONS:
            raise refuse(f"a piece marked 'more' carries exactly {MAX_STEP_POSITIONS} positions, not {positions}")
        if session.position + positions > session.max_length:
            raise refuse(f"{positions} positions from {session.position} exceed the session's length "
                         f"{session.max_length}", grpc.StatusCode.OUT_OF_RANGE)
        if session.computing:
            raise refuse("a step of this session is being computed; send steps one at a time",
                         grpc.StatusCode.ABORTED)
        session.last_used, session.computing = self.clock(), True
        loop = asyncio.get_running_loop()
        try:
            await self._take_payment(session, bytes(request.payment), token_step=not request.more)
            await self._wait_for_budget()
            began = self.clock()
            out = await loop.run_in_executor(stage.executor, session_forward, stage, session.cache, x)
            assert self.compute is not None
            self.compute.spend(self.clock() - began)
        except (RuntimeError, ValueError) as exc:  # a half-extended cache is worthless: drop the session
            self._sessions.pop(bytes(request.session_id), None)
            raise refuse(f"the step failed ({str(exc)[:200]}); the session is closed", grpc.StatusCode.ABORTED) from exc
        finally:
            session.computing = False
        if self._sessions.get(bytes(request.session_id)) is not session:
            raise refuse("the session was closed while it computed", grpc.StatusCode.NOT_FOUND)
        session.position += positions
        session.positions_served += positions
        session.tokens += 0 if request.more else 1
        session.last_used = self.clock()
        if self.on_served is not None:
            first, last = shard.layer_range
            self.on_served(Served(caller, positions, last - first, 0 if request.more else 1))
        spec, data = tensor_fields(out[:, -1] if shard.with_head else out)
        return pb2.InferenceStepReply(position=session.position, output=spec, data=data)

    async def _take_payment(self, session: _Session, payment: bytes, *, token_step: bool) -> None:
        """Apply the step's payment (tokens served and unpaid so far); before a step that produces a
        token, every earlier token must be paid."""
        if self.market is None or session.quote is None:
            return
        market, quote, due_from = self.market, session.quote, session.paid_tokens
        if payment and session.tokens > due_from:
            amount = await asyncio.get_running_loop().run_in_executor(
                None, market.pay, session.payer, quote, due_from, session.tokens, payment)
            session.paid_tokens, session.paid = session.tokens, session.paid + amount
        if token_step and session.tokens > session.paid_tokens:
            market.owes(session.payer)
            unpaid = session.tokens - session.paid_tokens
            raise refuse(f"pay for the {unpaid} token(s) served before asking for the next: "
                         f"{quote.price_per_token} micro-NEURO per token", grpc.StatusCode.PERMISSION_DENIED)

    async def _wait_for_budget(self) -> None:
        """Inference has used its share of compute: wait for budget, or refuse as busy."""
        assert self.compute is not None
        wait = self.compute.wait_s()
        if wait > self.limits.max_wait_s:
            raise refuse(BUSY_PREFIX + f"inference used its {self.limits.compute_share:.0%} share of this node's "
                         "compute; try another holder", grpc.StatusCode.UNAVAILABLE)
        if wait > 0:
            await self.sleep(wait)

    async def _close(self, caller: bytes, request: pb2.InferenceCloseRequest) -> pb2.InferenceCloseReply:
        session_id = check_common(request)
        session = self._sessions.get(session_id)
        if session is None or session.owner != caller:
            return pb2.InferenceCloseReply(closed=False)
        del self._sessions[session_id]
        if self.market is not None and session.quote is not None and session.tokens > session.paid_tokens:
            amount = await asyncio.get_running_loop().run_in_executor(
                None, self.market.pay, session.payer, session.quote, session.paid_tokens, session.tokens,
                bytes(request.payment))
            session.paid_tokens, session.paid = session.tokens, session.paid + amount
        return pb2.InferenceCloseReply(closed=True, tokens=session.tokens, paid=session.paid)

    def _expire(self) -> None:
        horizon = self.clock() - self.limits.idle_timeout_s
        for session_id in [k for k, s in self._sessions.items() if s.last_used < horizon]:
            session = self._sessions.pop(session_id)
            if self.market is not None and session.tokens > session.paid_tokens:
                self.market.owes(session.payer)  # served and never paid


def session_forward(stage: StageWorker, cache: ShardCache, x: torch.Tensor) -> torch.Tensor:
    """One prefill or decode step of the stage's layers (its lock held: no optimizer step meanwhile).
    As in model/generation.py: inference mode, INL blocks stop early once settled."""
    if x.shape[1] > MAX_STEP_POSITIONS:
        raise ValueError(f"a step carries at most {MAX_STEP_POSITIONS} positions")
    shard = stage.shard
    with stage.lock, torch.inference_mode(), shard.adaptive_stopping(True):
        return shard(x.to(stage.device), cache).float().cpu()
