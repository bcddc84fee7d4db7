"""PipelineDriver: runs one training step as micro-batches through the stages (Petals-style).

The driver holds the embedding stage and orchestrates every micro-batch stage by stage through
the transport: forward to each remote stage in turn, the head stage returns the loss with the
gradient of its input, then backward through the remote stages in reverse and finally locally.
Driver-orchestrated routing (rather than stage-to-stage chaining) costs one extra hop per stage
but makes failover local to one call: when a stage's peer dies, only that call is re-routed.

Schedule: up to ``#stages`` micro-batches are in flight at once. Each stage computes one request
at a time, so while micro-batch k runs backward on stage 2, micro-batch k+1 runs forward on stage
1: the 1F1B pattern (Narayanan et al., PipeDream-Flush), with the same in-flight bound that keeps
activation memory at ``#stages`` micro-batches per stage.

Exactly-once steps: stages accumulate each ``(driver, step, micro-batch)`` at most once and apply
the step only on ``commit`` with every micro-batch present. A micro-batch whose route changed
half-way (a stage died and a replica answered) is replayed from the start; a replica that took
over mid-step answers the commit with the micro-batches it misses, and exactly those are replayed.
A step is committed once or raises :class:`PipelineStalled` and is retried with the same batch.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import torch

from app.node.training.stage import GRAD_MBS, GRAD_NORM, GRAD_SQ, StageWorker
from app.node.training.transport import (
    OP_BACKWARD,
    OP_COMMIT,
    OP_FINISH,
    OP_FORWARD,
    GiveUp,
    Meta,
    RetryElsewhere,
    StageTransport,
    Tensors,
    WaitAndRetry,
)

LOCAL = "local"  # the driver's own stage, in the per-stage bookkeeping beside the remote stage starts


class PipelineStalled(RuntimeError):
    """A micro-batch or commit could not be completed by any live holder; retry the step later."""


class _RouteChanged(Exception):
    """A stage's backward was answered by another peer than its forward: replay the micro-batch."""


@dataclass(frozen=True)
class StepResult:
    step: int
    loss: float
    tokens: int
    microbatches: int
    replays: int
    failovers: int
    seconds: float
    routes: dict[int, str]


@dataclass
class _MicroBatch:
    index: int
    ids: torch.Tensor
    targets: torch.Tensor
    loss: float = float("nan")
    tokens: int = 0


@dataclass
class PipelineDriver:
    driver_id: str
    local: StageWorker
    stage_starts: list[int]  # first layer of each remote stage, in order
    transport: StageTransport | None
    micro_batches: int = 4
    proceed: Callable[[], Awaitable[bool]] | None = None
    routes: dict[int, str | None] = field(default_factory=dict)
    failovers: int = 0
    replays: int = 0

    def __post_init__(self) -> None:
        self._norms: dict[int, dict[int | str, tuple[str, int, float]]] = {}
        if self.stage_starts and self.transport is None:
            raise ValueError("a multi-stage pipeline needs a transport")
        for start in self.stage_starts:
            self.routes.setdefault(start, None)

    @property
    def stage_count(self) -> int:
        return 1 + len(self.stage_starts)

    async def train_step(self, step: int, batch: torch.Tensor) -> StepResult:
        """Train on ``batch`` [B, T+1] token ids (inputs and shifted targets) as step ``step``."""
        began, failovers0, replays0 = time.perf_counter(), self.failovers, self.replays
        if batch.dim() != 2 or batch.shape[0] % self.micro_batches:
            raise ValueError(f"batch {tuple(batch.shape)} does not split into {self.micro_batches} micro-batches")
        mbs = [_MicroBatch(i, chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous())
               for i, chunk in enumerate(batch.chunk(self.micro_batches))]
        slots = asyncio.Semaphore(self.stage_count)

        async def run(mb: _MicroBatch) -> None:
            async with slots:
                await self._run_with_retries(step, mb)

        await asyncio.gather(*(run(mb) for mb in mbs))
        loss_sum = sum(mb.loss * mb.tokens for mb in mbs)
        tokens = sum(mb.tokens for mb in mbs)
        loss = loss_sum / max(1, tokens)
        await self._commit_all(step, mbs, loss)
        return StepResult(step, loss, tokens, len(mbs), self.replays - replays0,
                          self.failovers - failovers0, time.perf_counter() - began,
                          {s: p for s, p in self.routes.items() if p is not None})

    async def finish(self) -> None:
        """Tell every holder of every later stage that this driver is done, so workers (which may
        serve several drivers, or none) know when the run is over."""
        assert self.transport is not None or not self.stage_starts
        meta = {"driver": self.driver_id, "step": 0}
        for start in self.stage_starts:
            for peer in self.transport.holders(start) if self.transport else []:
                try:
                    await self.transport.call(start, OP_FINISH, meta, [], prefer=peer)
                except (RetryElsewhere, WaitAndRetry, GiveUp):
                    continue

    # --- micro-batches -------------------------------------------------------------------------
    async def _run_with_retries(self, step: int, mb: _MicroBatch) -> None:
        """Run the micro-batch, replaying it when a stage failed or its route changed, as long and
        as often as the transport's router says (``retry_delay``)."""
        attempt = 0
        while True:
            if self.proceed is not None and not await self.proceed():
                raise asyncio.CancelledError("stop requested")
            try:
                await self._run_once(step, mb)
                return
            except (RetryElsewhere, WaitAndRetry, _RouteChanged) as exc:
                self.replays += 1
                if isinstance(exc, RetryElsewhere) and exc.peer is not None:
                    self._forget(exc.peer)
                delay = self._retry_delay(attempt)
                if delay is None:
                    raise PipelineStalled(f"micro-batch {mb.index} of step {step} failed {attempt + 1} times; "
                                          "waiting for the missing stage to get a new holder") from exc
                await asyncio.sleep(delay)
                attempt += 1

    def _retry_delay(self, attempt: int) -> float | None:
        return self.transport.retry_delay(attempt) if self.transport is not None else None

    async def _run_once(self, step: int, mb: _MicroBatch) -> None:
        meta = {"driver": self.driver_id, "step": step, "mb": mb.index}
        if not self.stage_starts:
            out_meta, _ = await self.local.handle(OP_FORWARD, meta, [mb.ids, mb.targets])
            mb.loss, mb.tokens = float(out_meta["loss"]), int(out_meta["tokens"])
            self._note_norm(step, LOCAL, LOCAL, out_meta)
            return
        _, (x,) = await self.local.handle(OP_FORWARD, meta, [mb.ids])
        inputs: list[torch.Tensor] = []
        served: list[str] = []
        for n, start in enumerate(self.stage_starts):
            last = n == len(self.stage_starts) - 1
            inputs.append(x)
            reply_meta, reply = await self._call(start, OP_FORWARD, meta, [x, mb.targets] if last else [x])
            served.append(self.routes[start] or "")
            if not reply:
                raise RetryElsewhere(f"stage {start} returned no tensor", self.routes[start])
            x = reply[0]
        mb.loss, mb.tokens = float(reply_meta["loss"]), int(reply_meta["tokens"])
        self._note_norm(step, self.stage_starts[-1], served[-1], reply_meta)
        grad = x
        for n in range(len(self.stage_starts) - 2, -1, -1):
            grad = await self._backward(step, self.stage_starts[n], meta, grad, inputs[n], served[n])
        local_meta, _ = await self.local.handle(OP_BACKWARD, meta, [grad])
        self._note_norm(step, LOCAL, LOCAL, local_meta)

    async def _backward(self, step: int, start: int, meta: Meta, grad: torch.Tensor, x: torch.Tensor,
                        forward_peer: str) -> torch.Tensor:
        reply_meta, reply = await self._call(start, OP_BACKWARD, meta, [grad])
        if self.routes[start] != forward_peer:
            raise _RouteChanged()
        if reply_meta.get("status") == "need_input":
            reply_meta, reply = await self._call(start, OP_BACKWARD, meta, [grad, x])
        if not reply:
            raise RetryElsewhere(f"stage {start} returned no gradient", self.routes[start])
        self._note_norm(step, start, self.routes[start] or "", reply_meta)
        return reply[0]

    async def _call(self, start: int, op: str, meta: Meta, tensors: Tensors) -> tuple[Meta, Tensors]:
        assert self.transport is not None
        prefer = self.routes.get(start)
        reply = await self.transport.call(start, op, meta, tensors, prefer=prefer)
        if prefer is not None and reply.peer != prefer:
            self.failovers += 1
        self.routes[start] = reply.peer
        return reply.meta, reply.tensors

    def _forget(self, peer: str) -> None:
        for start, routed in self.routes.items():
            if routed == peer:
                self.routes[start] = None

    # --- global gradient clipping ----------------------------------------------------------------
    def _note_norm(self, step: int, start: int | str, peer: str, reply: Meta) -> None:
        """Keep each stage's latest share of the gradient norm for this step (stage.py GRAD_SQ)."""
        sq, count = reply.get(GRAD_SQ), reply.get(GRAD_MBS)
        if isinstance(sq, int | float) and isinstance(count, int) and math.isfinite(sq) and sq >= 0:
            known = self._norms.setdefault(step, {}).get(start)
            if known is None or known[0] != peer or count >= known[1]:
                self._norms[step][start] = (peer, count, float(sq))

    def _global_norm(self, step: int, microbatches: int) -> float | None:
        """The whole model's gradient norm, when every stage reported its share over all
        micro-batches from the holder the commit goes to; None otherwise (stages then clip alone)."""
        shares = self._norms.pop(step, {})
        for old in [s for s in self._norms if s < step]:
            del self._norms[old]
        expected = [*self.stage_starts, LOCAL]
        if any(start not in shares for start in expected):
            return None
        if any(shares[start][1] != microbatches or (start != LOCAL and shares[start][0] != self.routes.get(start))
               for start in expected):
            return None
        return math.sqrt(sum(shares[start][2] for start in expected)) / microbatches

    # --- commit --------------------------------------------------------------------------------
    async def _commit_all(self, step: int, mbs: list[_MicroBatch], loss: float) -> None:
        meta = {"driver": self.driver_id, "step": step, "microbatches": len(mbs), "loss": loss,
                "tokens": sum(mb.tokens for mb in mbs)}
        norm = self._global_norm(step, len(mbs))
        if norm is not None:
            meta[GRAD_NORM] = norm
        await asyncio.gather(*(self._commit_remote(step, start, meta, mbs) for start in self.stage_starts))
        out, _ = await self.local.handle(OP_COMMIT, meta, [])
        if out["status"] == "missing":  # cannot happen unless the local stage lost state
            raise PipelineStalled(f"local stage misses micro-batches {out['missing']} of step {step}")

    async def _commit_remote(self, step: int, start: int, meta: Meta, mbs: list[_MicroBatch]) -> None:
        attempt = 0
        while True:
            try:
                out, _ = await self._call(start, OP_COMMIT, meta, [])
            except (RetryElsewhere, WaitAndRetry) as exc:
                if isinstance(exc, RetryElsewhere) and exc.peer is not None:
                    self._forget(exc.peer)
            else:
                if out.get("status") in ("ok", "already"):
                    return
                missing = [i for i in out.get("missing", []) if isinstance(i, int) and 0 <= i < len(mbs)]
                self.replays += len(missing)
                await asyncio.gather(*(self._run_with_retries(step, mbs[i]) for i in missing))
            delay = self._retry_delay(attempt)
            if delay is None:
                raise PipelineStalled(f"stage {start} did not accept step {step}")
            await asyncio.sleep(delay)
            attempt += 1
