"""StageWorker: one node's pipeline stage — its shard, its inner AdamW, its gradient buffers.

A stage answers four operations (transport.py): ``forward`` (the head stage also computes the
loss and its own backward at once, so the last stage does F and B back to back, as 1F1B wants),
``backward``, ``commit`` and ``finish``. It serves any number of drivers: gradients are kept per
``(driver, step)``, and each micro-batch is accumulated at most once, so a micro-batch replayed
after a failover is never counted twice. ``commit`` applies the step only when every micro-batch
of it is present; otherwise it answers which are missing (a replica that took over mid-step) and
the driver replays exactly those. Forward graphs are cached; when a backward arrives for a graph
this stage never built (it took over after the forward), it asks for the input and recomputes.

Vocabulary: a stage with the embedding or the head knows the vocabulary it computes for
(``vocab``, a tag such as ``"266-…"``). A request that carries another tag under ``"vocab"`` is
answered ``{"status": "vocab_mismatch", "vocab": <ours>}`` without computing: token ids of one
vocabulary fed to the embedding or scored by the head of another would be garbage, and the
answer lets the caller retry once one side has caught up (app/node/training/vocab_growth.py).
Requests without the tag (the driver's calls into its own local stage) are not checked.

Compute runs in an executor thread under one lock; the asyncio side only waits, so the node keeps
answering heartbeats while a layer computes (DESIGN.md §2).

Device: the stage computes on ``device`` (the node's GPU, or the CPU). The shard is built on the
CPU (genesis weights are bit-identical on every node) and moved there; parameters, the inner AdamW
moments and cached graphs live on the device. The transport only ever sees CPU tensors: every
tensor that enters is moved to the device, every tensor handed back (outputs, input gradients,
weights for transfer) is a contiguous CPU copy, and hashes are taken over CPU bytes so nodes on
different devices agree.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import torch

from app.node.model.architecture import ModelArchitecture
from app.node.model.shard import ModelShard, lm_loss
from app.node.training.arch_guard import arch_refusal
from app.node.training.config import TrainingConfig
from app.node.training.inl_losses import attach_penalty, schedule_for
from app.node.training.inner_optim import InnerAdamW, lr_at
from app.node.training.round_gate import RoundGate
from app.node.training.speed import SpeedPlan, apply_speed, autocast, plan_speed
from app.node.training.stage_weights import StageWeights, state_hash
from app.node.training.transport import OP_BACKWARD, OP_COMMIT, OP_FINISH, OP_FORWARD, GiveUp, Meta, Tensors
from app.node.training.vocab_growth import VOCAB_KEY, VOCAB_MISMATCH, VocabGuard

MAX_CACHED_GRAPHS = 64
"""Forward graphs kept for backward; 1F1B keeps at most #stages in flight per driver, so 64 is
ample, and the bound keeps a driver that vanished from leaking memory."""

REMEMBERED_COMMITS = 1024

__all__ = ["VOCAB_KEY", "VOCAB_MISMATCH", "CommitInfo", "StageWorker", "build_shard", "lr_at", "state_hash"]


def build_shard(arch: ModelArchitecture, layer_range: tuple[int, int], *, with_embedding: bool,
                with_head: bool, seed: int) -> ModelShard:
    """A shard whose initial weights depend only on (seed, global layer index).

    Every node builds the same genesis weights for the layers it holds, without downloading them,
    and a pipeline of shards equals ``ModelShard.full`` built the same way.
    """
    shard = ModelShard(arch, layer_range[0], layer_range[1], with_embedding=with_embedding,
                       with_head=with_head)
    with torch.random.fork_rng(devices=[]):
        if shard.embedding is not None:
            torch.manual_seed(seed * 100_003 + 1)
            shard.embedding.init_weights()
        if shard.head is not None and not arch.tie_embeddings:
            torch.manual_seed(seed * 100_003 + 2)
            shard.head.init_weights()
        for layer in range(*layer_range):
            torch.manual_seed(seed * 100_003 + 10 + layer)
            shard.block(layer).init_weights(arch.layers)
    return shard


def to_transport(t: torch.Tensor) -> torch.Tensor:
    """What a stage hands to the transport: detached, contiguous, on the CPU (no copy if it is)."""
    return t.detach().to("cpu").contiguous()


GRAD_SQ, GRAD_MBS, GRAD_NORM = "grad_sq", "grad_mbs", "grad_norm"
"""Meta keys of global gradient clipping: each stage reports the squared norm of its accumulated
gradients with every backward; the driver sums them over the stages and sends the norm of the
whole model's gradient with the commit, so every stage scales by the same factor, as clipping a
single-process model would (a stage alone sees only its own share of the norm)."""


@dataclass
class _Accumulator:
    microbatches: set[int] = field(default_factory=set)
    grads: list[torch.Tensor] | None = None
    tokens: int = 0
    sumsq: float = 0.0  # squared L2 norm of ``grads`` (the sum over micro-batches, not the mean)

    def norm_meta(self) -> Meta:
        """What the driver needs for global gradient clipping: this stage's share of the norm."""
        return {GRAD_SQ: self.sumsq, GRAD_MBS: len(self.microbatches)}


@dataclass(frozen=True)
class CommitInfo:
    """What one applied step did on this stage (for events, DiLoCo cadence and PoNW)."""

    driver: str
    step: int
    microbatches: int
    tokens: int
    loss: float
    inner_step: int
    hash_before: str
    hash_after: str
    lr: float = 0.0  # the inner learning rate this step applied
    grad_norm: float | None = None  # the whole model's gradient norm the driver sent (None: clipped alone)


CommitHook = Callable[["StageWorker", CommitInfo], None]
"""Called with the stage and what its commit did, with the stage's lock held, right after the
optimizer changed the weights in place (the trainer turns it into a StepInfo)."""
AfterCommitHook = Callable[["StageWorker"], Awaitable[None]]
"""Awaited after an applied commit, before the caller hears "ok" (DiLoCo: the step that makes a
round due waits for it)."""


ForwardHook = Callable[["StageWorker", str, int, int, list[torch.Tensor], torch.Tensor], None]
"""Called with (stage, driver, step, micro-batch, inputs, output or loss) after each forward, lock
held, before the step commits: PoNW's step log keeps what the step's proof will commit to."""
BackwardHook = Callable[["StageWorker", str, int, int, torch.Tensor], None]
"""Called with (stage, driver, step, micro-batch, gradient of the output) when a backward adds a
micro-batch's gradients (lock held; never for a replayed micro-batch already in): with the
forwards, what a verifier needs to re-run the step's backward."""
AppliedHook = Callable[["StageWorker", CommitInfo], None]
"""Called like CommitHook, right after the optimizer step (lock held): PoNW's step log takes the
weights after the step (runtime/verification.py)."""


class StageWorker:
    def __init__(self, shard: ModelShard, config: TrainingConfig, *, executor: Executor | None = None,
                 on_commit: CommitHook | None = None, after_commit: AfterCommitHook | None = None,
                 on_forward: ForwardHook | None = None, on_backward: BackwardHook | None = None,
                 on_applied: AppliedHook | None = None,
                 vocab: VocabGuard | None = None, device: torch.device | str = "cpu",
                 speed: SpeedPlan | None = None) -> None:
        self.device = torch.device(device)
        # Module.to keeps the Parameter objects (it swaps their data), so tied weights stay tied
        # and anything holding the parameters (DiLoCo, the optimizer below) sees the moved ones.
        self.shard = shard.to(self.device)
        # Autocast, compile and activation checkpointing (training/speed.py); without a plan,
        # the device's defaults: bf16 + compile on CUDA, float32 eager on the CPU.
        self.speed = speed if speed is not None else plan_speed(self.device)
        attach_penalty(self.shard, config.variance_loss_weight, schedule_for(config.cycle_schedule),
                       step=lambda: self.inner_step)  # INL only, off by default (training/inl_losses.py)
        apply_speed(self.shard, self.speed)
        self.config = config
        self.params = [p for p in shard.parameters() if p.requires_grad]
        self.optimizer = InnerAdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.inner_step = 0  # optimizer steps applied here, over all drivers
        self.tokens_trained = 0
        self.executor = executor
        self._on_commit = on_commit
        self._after_commit = after_commit
        self._on_forward = on_forward
        self._on_backward = on_backward
        self._on_applied = on_applied
        self.vocab_guard = vocab if vocab is not None else VocabGuard()
        self.lock = threading.Lock()
        self.gate = RoundGate()  # closed while DiLoCo rewrites the weights
        self.weights = StageWeights(self.shard, self.lock, on_loaded=self.drop_graphs)
        self.finished_drivers: set[str] = set()  # drivers that said they are done (to every holder)
        self.seen_drivers: set[str] = set()  # drivers that routed work here (forward/backward/commit)
        # forward graphs awaiting their backward: (input leaf, output, parameter versions at forward)
        self._graphs: OrderedDict[tuple[str, int, int], tuple[torch.Tensor | None, torch.Tensor, tuple[int, ...]]] \
            = OrderedDict()
        self._acc: dict[tuple[str, int], _Accumulator] = {}
        self._committed: deque[tuple[str, int]] = deque(maxlen=REMEMBERED_COMMITS)

    @property
    def vocab(self) -> str:
        """Tag of the vocabulary the embedding/head are for; "" = not checked."""
        return self.vocab_guard.tag

    @property
    def layer_range(self) -> tuple[int, int]:
        return self.shard.layer_range

    @property
    def is_first(self) -> bool:
        return self.shard.with_embedding

    @property
    def is_last(self) -> bool:
        return self.shard.with_head

    # --- async entry point (what the transport calls) ------------------------------------------
    async def handle(self, op: str, meta: Meta, tensors: Tensors) -> tuple[Meta, Tensors]:
        await self.gate.wait_open()
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self.executor, self.handle_sync, op, meta, tensors)
        if out[0].get("status") == VOCAB_MISMATCH:
            await self.vocab_guard.heard(str(meta.get(VOCAB_KEY)))  # catch up if our ledger agrees
        if op == OP_COMMIT and out[0].get("status") == "ok" and self._after_commit is not None:
            await self._after_commit(self)  # DiLoCo: the step that makes a round due waits for it
        return out

    def handle_sync(self, op: str, meta: Meta, tensors: Tensors) -> tuple[Meta, Tensors]:
        driver, step = _str(meta, "driver"), _int(meta, "step")
        with self.lock:
            refusal = arch_refusal(meta, self.shard.architecture, self.layer_range)  # training/arch_guard.py
            if refusal is not None:
                return refusal, []  # a driver of another version is not one of ours (an idle replica stays idle)
            if op != OP_FINISH:  # a driver says finish to every holder, also to replicas it never used
                self.seen_drivers.add(driver)
            if op != OP_FINISH and (self.is_first or self.is_last):
                refusal = self.vocab_guard.refusal(meta, self.layer_range)
                if refusal is not None:
                    return refusal, []
            if op == OP_FORWARD:
                return self._forward(driver, step, _int(meta, "mb"), tensors)
            if op == OP_BACKWARD:
                return self._backward(driver, step, _int(meta, "mb"), tensors)
            if op == OP_COMMIT:
                return self._commit(driver, step, _int(meta, "microbatches"), _loss(meta),
                                    int(meta.get("tokens", 0) or 0), _grad_norm(meta)), []
            if op == OP_FINISH:
                self.finished_drivers.add(driver)
                return {"status": "ok"}, []
        raise GiveUp(f"unknown stage operation {op!r}")

    # --- operations ----------------------------------------------------------------------------
    def _input(self, tensors: Tensors, n: int = 0) -> torch.Tensor:
        if len(tensors) <= n:
            raise GiveUp(f"expected at least {n + 1} tensor(s), got {len(tensors)}")
        x = tensors[n]
        if self.is_first:
            if x.dtype != torch.long or x.dim() != 2:
                raise GiveUp("the first stage takes token ids [B, T] (int64)")
            return x.to(self.device)
        if not x.is_floating_point() or x.dim() != 3 or x.shape[-1] != self.shard.architecture.hidden:
            raise GiveUp(f"stage {self.layer_range} takes hidden states [B, T, "
                                    f"{self.shard.architecture.hidden}], got {tuple(x.shape)}")
        return x.detach().to(self.device, torch.float32).requires_grad_()

    def _forward(self, driver: str, step: int, mb: int, tensors: Tensors) -> tuple[Meta, Tensors]:
        x = self._input(tensors)
        self.shard.train()
        if self.is_last:
            targets = tensors[1] if len(tensors) > 1 else None
            if targets is None or targets.dtype != torch.long or targets.shape != x.shape[:2]:
                raise GiveUp("the head stage needs targets [B, T] (int64) with the input")
            tokens = _count_targets(targets)  # counted on the CPU copy: no device round trip
            loss = lm_loss(self._run(x), targets.to(self.device))
            x_leaf = x if x.requires_grad else None
            grad_in = self._accumulate(driver, step, mb, loss, None, x_leaf, tokens)
            if self._on_forward is not None:
                self._on_forward(self, driver, step, mb, [tensors[0], targets], loss)
            return {"loss": float(loss.detach()), "tokens": tokens,
                    **self._acc[(driver, step)].norm_meta()}, grad_in
        out = self._run(x)
        if self._on_forward is not None:
            self._on_forward(self, driver, step, mb, [tensors[0]], out)
        self._graphs[(driver, step, mb)] = (x if x.requires_grad else None, out, self._param_versions())
        while len(self._graphs) > MAX_CACHED_GRAPHS:
            self._graphs.popitem(last=False)
        return {}, [to_transport(out)]

    def _backward(self, driver: str, step: int, mb: int, tensors: Tensors) -> tuple[Meta, Tensors]:
        if not tensors:
            raise GiveUp("backward needs the gradient of this stage's output")
        grad_out = tensors[0].to(self.device, torch.float32)
        graph = self._graphs.pop((driver, step, mb), None)
        x: torch.Tensor | None = None
        if graph is not None and graph[2] != self._param_versions():
            # The weights changed in place since this forward (another driver's commit, a DiLoCo
            # outer step, a weight download): autograd would refuse the stale graph. Recompute it
            # on the current weights from the saved input, or ask the driver for the input.
            x, graph = (graph[0].detach().requires_grad_() if graph[0] is not None else None), None
        if graph is None:
            if x is None and len(tensors) < 2:  # we never ran this forward (took over mid-step): ask for input
                return {"status": "need_input"}, []
            x = x if x is not None else self._input(tensors, 1)
            self.shard.train()
            graph = (x if x.requires_grad else None, self._run(x), ())
        x_leaf, out, _ = graph
        if out.shape != grad_out.shape:
            raise GiveUp(f"gradient shape {tuple(grad_out.shape)} != output {tuple(out.shape)}")
        acc = self._acc.get((driver, step))
        fresh = (acc is None or mb not in acc.microbatches) and (driver, step) not in self._committed
        grad_in = self._accumulate(driver, step, mb, out, grad_out, x_leaf, 0)
        if fresh and self._on_backward is not None:
            self._on_backward(self, driver, step, mb, tensors[0])
        return {"status": "ok", **self._acc[(driver, step)].norm_meta()}, grad_in

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.speed.autocast_bf16):
            return self.shard(x)

    def _param_versions(self) -> tuple[int, ...]:
        """Autograd's in-place counters of the parameters: they change whenever the weights do."""
        return tuple(p._version for p in self.params)

    def _accumulate(self, driver: str, step: int, mb: int, out: torch.Tensor,
                    grad_out: torch.Tensor | None, x_leaf: torch.Tensor | None, tokens: int) -> Tensors:
        """Backward once; add the parameter gradients unless this micro-batch is already in."""
        acc = self._acc.setdefault((driver, step), _Accumulator())
        fresh = mb not in acc.microbatches and (driver, step) not in self._committed
        inputs = ([x_leaf] if x_leaf is not None else []) + (self.params if fresh else [])
        if not inputs:
            return []
        grads = torch.autograd.grad(out, inputs, grad_outputs=grad_out, allow_unused=True)
        grad_in = [to_transport(grads[0])] if x_leaf is not None else []
        if fresh:
            param_grads = grads[1:] if x_leaf is not None else grads
            param_grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, param_grads, strict=True)]
            acc.grads = param_grads if acc.grads is None else [a + g for a, g in zip(acc.grads, param_grads, strict=True)]
            acc.sumsq = float(sum((a.float().pow(2).sum() for a in acc.grads), torch.zeros((), device=self.device)))
            acc.microbatches.add(mb)
            acc.tokens += tokens
        return grad_in

    def local_grad_norm(self, driver: str, step: int) -> float | None:
        """This stage's own share of the gradient norm of a step not yet committed (the norm of its
        mean gradient over the micro-batches in so far); None when none are in."""
        acc = self._acc.get((driver, step))
        if acc is None or not acc.microbatches:
            return None
        return math.sqrt(acc.sumsq) / len(acc.microbatches)

    def _commit(self, driver: str, step: int, microbatches: int, loss: float, tokens: int,
                grad_norm: float | None = None) -> Meta:
        if (driver, step) in self._committed:
            return {"status": "already", "inner_step": self.inner_step}
        acc = self._acc.get((driver, step), _Accumulator())
        missing = sorted(set(range(microbatches)) - acc.microbatches)
        if missing:
            return {"status": "missing", "missing": missing}
        before = self.weights_hash()
        for p, g in zip(self.params, acc.grads or [], strict=False):
            p.grad = g / microbatches
        # With the whole model's norm from the driver every stage clips as one model would; without
        # it (the driver could not vouch for every stage's share after a failover) a stage clips alone.
        _clip_grad_norm(self.params, self.config.grad_clip, total=grad_norm)
        self.optimizer.lr = lr_at(self.inner_step, self.config)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.inner_step += 1
        tokens = acc.tokens or max(0, tokens)  # only the head counts targets; others trust the driver
        self.tokens_trained += tokens
        self._committed.append((driver, step))
        self._drop_driver_state(driver, up_to_step=step)
        info = CommitInfo(driver, step, microbatches, tokens, loss, self.inner_step, before,
                          self.weights_hash(), self.optimizer.lr, grad_norm)
        if self._on_applied is not None:
            self._on_applied(self, info)
        if self._on_commit is not None:
            self._on_commit(self, info)
        return {"status": "ok", "inner_step": self.inner_step}

    def _drop_driver_state(self, driver: str, up_to_step: int) -> None:
        for key in [k for k in self._acc if k[0] == driver and k[1] <= up_to_step]:
            del self._acc[key]
        for key in [k for k in self._graphs if k[0] == driver and k[1] <= up_to_step]:
            del self._graphs[key]

    # --- weights -------------------------------------------------------------------------------
    def drop_graphs(self) -> None:
        """Forget cached forward graphs (call with ``lock`` held, after replacing weights): a later
        backward then asks for the input and recomputes on the new weights."""
        self._graphs.clear()

    def discard_pending(self) -> None:
        """Forget accumulated gradients and forward graphs of unfinished steps (call with ``lock``
        held, after the parameters changed shape): their drivers replay what commit reports missing."""
        self._acc.clear()
        self._graphs.clear()

    def restore_counters(self, inner_step: int, tokens_trained: int) -> None:
        """Resume the counts of a checkpoint (with its weights and optimizer state)."""
        self.inner_step, self.tokens_trained = inner_step, tokens_trained

    # weights as other parts see them (stage_weights.py): PoNW hashes, agreement checks, transfer
    def weights_hash(self) -> str:
        return self.weights.hash()

    def layer_hashes(self) -> dict[str, str]:
        return self.weights.layer_hashes()

    def state_for_transfer(self) -> dict[str, torch.Tensor]:
        return self.weights.for_transfer()

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        self.weights.load(state)


@torch.no_grad()
def _clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float, total: float | None = None) -> float:
    """Scale gradients so their L2 norm, ``total`` (computed from ``params`` when not given), is at
    most ``max_norm`` (as torch's clip_grad_norm_, which would import torch._dynamo: ~8 s at first
    use, see inner_optim.py)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if total is None:
        zero = torch.zeros((), device=grads[0].device)
        total = float(torch.sqrt(sum((g.float().pow(2).sum() for g in grads), zero)))
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / (total + 1e-6))
    return total


def _count_targets(targets: torch.Tensor) -> int:
    from app.node.model.shard import PAD_ID

    return int((targets != PAD_ID).sum())


def _grad_norm(meta: Meta) -> float | None:
    value = meta.get(GRAD_NORM)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise GiveUp(f"{GRAD_NORM} must be a finite number >= 0, got {value!r}")
    return float(value)


def _loss(meta: Meta) -> float:
    value = meta.get("loss", float("nan"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _int(meta: Meta, key: str) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GiveUp(f"stage request field {key!r} must be a non-negative integer, got {value!r}")
    return value


def _str(meta: Meta, key: str) -> str:
    value = meta.get(key)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise GiveUp(f"stage request field {key!r} must be a short non-empty string")
    return value
