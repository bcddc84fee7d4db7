"""How a stage runs its shard fast and within memory, applied from outside the model.

torchtitan's ``parallelize``: the model's modules know nothing of precision, compilation or
activation checkpointing; training decides them for the device and memory it has, and applies
them to the blocks it holds. Three options:

* bf16 autocast on CUDA (weights, gradients and AdamW state stay float32). Never on CPU, where
  bf16 matmuls are slower than float32 on most volunteer machines.
* ``torch.compile`` per block on CUDA, where it gives ~1.5× (PLATFORM.md's H100 table). Off on
  CPU: there it costs ~40 s cold for +10 % (PLATFORM.md). A block whose compiled forward fails
  (no compiler toolchain, an unsupported op) falls back to eager, and the failure is reported
  once through ``on_fallback``.
* activation checkpointing per block, when the stage's estimated training memory
  (``stage_training_bytes``) would not fit the node's budget otherwise: each block then keeps
  only its input for backward and recomputes the rest, at the cost of one extra forward.

Options are applied by replacing a block's ``forward`` on the instance, so the module tree and
its ``state_dict`` keys stay exactly those of the model (weight hashes, transfers and
checkpoints do not see them); ``remove_speed`` restores the class's forward.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from app.node.model.architecture import ModelArchitecture
from app.node.model.shard import ModelShard

log = logging.getLogger("neuroshard.training.speed")

STATE_BYTES_PER_PARAM = 24
"""Weights 4 + gradient 4 + AdamW moments 8 + DiLoCo anchor 4 + outer momentum 4 (the state part
of architecture.BYTES_PER_TRAINED_PARAM, whose remaining 1.5× headroom we estimate here from the
activations instead)."""

ACTIVATION_FLOATS_PER_TOKEN_HIDDEN = 16
ACTIVATION_FLOATS_PER_TOKEN_FFN = 4
"""float32 values one decoder block saves for backward per token, per hidden and per FFN channel:
norms, q/k/v, rotary outputs, attention output, residuals (≈ 16 × hidden) and SwiGLU's gate, up,
silu and product (≈ 4 × ffn). Checked against saved-tensor hooks on the tiny and genesis shapes
(tests/training/test_speed.py pins that the estimate is not below the measurement)."""


@dataclass(frozen=True, kw_only=True)
class SpeedPlan:
    """What a stage applies to its shard, and why (the reasons are logged and shown)."""

    autocast_bf16: bool = False
    compile: bool = False
    checkpoint_activations: bool = False
    reasons: tuple[str, ...] = ()

    def memory_savers(self) -> tuple[str, ...]:
        """The memory savers this plan turns on, by name (for the layer assignment event)."""
        return ("activation_checkpointing",) if self.checkpoint_activations else ()


def block_activation_bytes(arch: ModelArchitecture, tokens: int) -> int:
    """Bytes one block saves for backward over ``tokens`` tokens (float32, no checkpointing)."""
    per_token = ACTIVATION_FLOATS_PER_TOKEN_HIDDEN * arch.hidden + ACTIVATION_FLOATS_PER_TOKEN_FFN * arch.ffn
    return 4 * per_token * tokens


def stage_training_bytes(arch: ModelArchitecture, layers: int, tokens: int, *, with_embedding: bool = False,
                         with_head: bool = False, checkpoint_activations: bool = False) -> int:
    """Estimated training memory of a stage of ``layers`` blocks over ``tokens`` tokens in flight.

    State is STATE_BYTES_PER_PARAM per parameter (embedding and head included when held); the head
    also keeps its logits and their float32 softmax for backward. With checkpointing each block
    keeps only its input (hidden floats per token) and one block's full activations exist at a
    time, while it is recomputed.
    """
    params = layers * arch.layer_param_count()
    params += arch.embedding_param_count() if with_embedding else 0
    params += arch.head_param_count() if with_head else 0
    activations = 2 * 4 * arch.vocab * tokens if with_head else 0
    if checkpoint_activations:
        activations += layers * 4 * arch.hidden * tokens + (block_activation_bytes(arch, tokens) if layers else 0)
    else:
        activations += layers * block_activation_bytes(arch, tokens)
    return params * STATE_BYTES_PER_PARAM + activations


def plan_speed(device: torch.device | str, *, arch: ModelArchitecture | None = None, layers: int = 0,
               with_embedding: bool = False, with_head: bool = False, tokens_in_flight: int = 0,
               memory_budget_bytes: int | None = None, compile: bool | None = None) -> SpeedPlan:
    """The options for a stage of ``layers`` blocks (and the embedding / head when held) on
    ``device`` within ``memory_budget_bytes``.

    ``compile`` None means "on CUDA"; without a budget (or an architecture) activations are not
    checkpointed. CPU stays float32 eager unless ``compile`` says otherwise.
    """
    on_cuda = torch.device(device).type == "cuda"
    reasons: list[str] = []
    if on_cuda:
        reasons.append("bf16 autocast on CUDA")
    use_compile = on_cuda if compile is None else compile
    if use_compile:
        reasons.append("torch.compile per block")
    ckpt = False
    if arch is not None and memory_budget_bytes is not None and layers > 0 and tokens_in_flight > 0:
        plain = stage_training_bytes(arch, layers, tokens_in_flight, with_embedding=with_embedding,
                                     with_head=with_head)
        if plain > memory_budget_bytes:
            ckpt = True
            reasons.append(f"activation checkpointing: {layers} layers need ~{plain / 2**20:.0f} MiB, "
                           f"the budget is {memory_budget_bytes / 2**20:.0f} MiB")
    return SpeedPlan(autocast_bf16=on_cuda, compile=use_compile, checkpoint_activations=ckpt,
                     reasons=tuple(reasons))


@contextlib.contextmanager
def autocast(device: torch.device | str, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CUDA when enabled; nothing on CPU."""
    if enabled and torch.device(device).type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


class _CompiledOrEager:
    """A block's forward through ``torch.compile`` until it fails once, then eager for good.

    The compiled function is built lazily by torch on the first call; a failure there (a missing
    compiler, an op dynamo cannot trace) must not stop training, so it is reported once and the
    same call is answered eagerly.
    """

    def __init__(self, eager: Callable[..., Any], on_fallback: Callable[[BaseException], None]) -> None:
        self._eager = eager
        self._compiled: Callable[..., Any] | None = torch.compile(eager)
        self._on_fallback = on_fallback

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 — any compiler failure means "run eagerly"
                self._compiled = None
                self._on_fallback(exc)
        return self._eager(*args, **kwargs)


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: Any = None) -> Any:
        # Only a forward that builds a graph recomputes; inference (a KV cache, or no_grad)
        # runs straight through, since there is nothing to save.
        if cache is None and torch.is_grad_enabled():
            return checkpoint(forward, x, cos, sin, use_reentrant=False)
        return forward(x, cos, sin, cache)

    return run


class FallbackReporter:
    """Reports the first compile failure of a shard (every block would repeat it)."""

    def __init__(self, report: Callable[[str], None] | None = None) -> None:
        self._report = report
        self.failure: str | None = None

    def __call__(self, exc: BaseException) -> None:
        if self.failure is not None:
            return
        self.failure = f"torch.compile failed, running eagerly: {type(exc).__name__}: {str(exc)[:200]}"
        log.warning(self.failure)
        if self._report is not None:
            self._report(self.failure)


def apply_speed(shard: ModelShard, plan: SpeedPlan,
                on_compile_fallback: Callable[[str], None] | None = None) -> FallbackReporter:
    """Apply ``plan``'s compile and checkpointing to every block of ``shard`` (autocast is a
    context the caller enters around each forward: ``autocast(device, plan.autocast_bf16)``).
    Apply once per shard: it wraps whatever forward each block has (training/inl_losses.py's
    penalty, if attached first)."""
    reporter = FallbackReporter(on_compile_fallback)
    for block in shard.blocks.values():
        forward: Callable[..., Any] = block.forward
        if plan.compile:
            forward = _CompiledOrEager(forward, reporter)
        if plan.checkpoint_activations:
            forward = _checkpointed(forward)
        if plan.compile or plan.checkpoint_activations:
            block.forward = forward  # type: ignore[method-assign]
    return reporter


def remove_speed(shard: ModelShard) -> None:
    """Back to the model's own forward on every block (speed options and penalties)."""
    for block in shard.blocks.values():
        block.__dict__.pop("forward", None)
