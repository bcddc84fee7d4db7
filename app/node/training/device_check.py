"""Before training on a GPU, check that it computes what the CPU computes.

Volunteers' GPU drivers are often broken (a mismatched CUDA runtime, a flaky card, an MPS op
that silently returns zeros). A node that trains on such a device sends garbage pseudo-gradients
to its cohort and garbage activations down the pipeline. So, once at start, the node runs one
real training step (forward with loss, backward, inner AdamW step: the StageWorker code path) of
a tiny model on its device and on the CPU from the same genesis weights and batch, and compares:
the loss before the step, the loss after it, and the updated weights. If the device raises or
disagrees, the node trains on the CPU and says why (the runtime emits a non-fatal error event).

Tolerances are loose on purpose: float32 kernels differ between devices in the last bits, and a
first AdamW step moves every weight by about ±lr whatever the gradient's size, so a tiny
gradient whose sign differs can move a weight by up to 2·lr differently. A broken device is off
by far more (NaN, zeros, noise), which is what this catches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from app.node.model.architecture import GENESIS_VOCAB, ModelArchitecture
from app.node.training.config import TrainingConfig
from app.node.training.speed import SpeedPlan
from app.node.training.stage import StageWorker, build_shard
from app.node.training.transport import OP_COMMIT, OP_FORWARD

CHECK_LR = 1e-3
LOSS_RTOL = 1e-3
"""Relative tolerance on the loss: a float32 forward of this size agrees to ~1e-6 across devices."""
WEIGHT_ATOL = 3 * CHECK_LR
"""Absolute tolerance on the weights after one AdamW step (module docstring: ±lr per weight)."""

_ARCH = ModelArchitecture(hidden=32, layers=2, heads=2, kv_heads=1, head_dim=16, ffn=64,
                          vocab=GENESIS_VOCAB, max_seq=16)
_CONFIG = TrainingConfig.from_dict({"model": "tiny", "batch_size": 2, "micro_batches": 1, "seq_len": 16,
                                    "lr": CHECK_LR, "warmup_steps": 0, "weight_decay": 0.1})


@dataclass(frozen=True)
class StepOutcome:
    """One check step: loss before and after the update, and the updated weights (CPU)."""

    loss_before: float
    loss_after: float
    weights: dict[str, torch.Tensor]


StepFn = Callable[[torch.device, int], StepOutcome]


@dataclass(frozen=True)
class DeviceCheck:
    """The device to train on, and why it is not the one asked for (empty when it is)."""

    requested: str
    device: str
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def tiny_step(device: torch.device, seed: int) -> StepOutcome:
    """One float32 training step of a tiny two-layer model through StageWorker on ``device``."""
    shard = build_shard(_ARCH, (0, _ARCH.layers), with_embedding=True, with_head=True, seed=seed)
    # float32 eager on both sides (SpeedPlan()): this checks the device's kernels, and bf16 would
    # differ from the CPU by more than the tolerances allow on a healthy card.
    stage = StageWorker(shard, _CONFIG, device=device, speed=SpeedPlan())
    gen = torch.Generator().manual_seed(seed)
    batch = torch.randint(0, _ARCH.vocab, (_CONFIG.batch_size, _CONFIG.seq_len + 1), generator=gen)
    ids, targets = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
    meta = {"driver": "device-check", "step": 0, "mb": 0}
    before, _ = stage.handle_sync(OP_FORWARD, meta, [ids, targets])
    stage.handle_sync(OP_COMMIT, {"driver": "device-check", "step": 0, "microbatches": 1}, [])
    after, _ = stage.handle_sync(OP_FORWARD, {**meta, "step": 1}, [ids, targets])
    return StepOutcome(float(before["loss"]), float(after["loss"]), stage.state_for_transfer())


def compare(reference: StepOutcome, candidate: StepOutcome) -> str:
    """Empty when ``candidate`` (the device) agrees with ``reference`` (the CPU), else what differs."""
    for what, ref, got in (("loss", reference.loss_before, candidate.loss_before),
                           ("loss after one step", reference.loss_after, candidate.loss_after)):
        if not math.isfinite(got) or abs(got - ref) > LOSS_RTOL * max(1.0, abs(ref)):
            return f"{what} is {got:.6g} on the device but {ref:.6g} on the CPU"
    if set(candidate.weights) != set(reference.weights):
        return "the device returned different weights than the CPU"
    for name, ref in reference.weights.items():
        got = candidate.weights[name].to("cpu", torch.float32)
        if got.shape != ref.shape or not bool(torch.isfinite(got).all()):
            return f"weight {name} after one step is not finite or has the wrong shape on the device"
        diff = float((got - ref.float()).abs().max()) if ref.numel() else 0.0
        if diff > WEIGHT_ATOL:
            return f"weight {name} after one step differs from the CPU's by {diff:.3g} (allowed {WEIGHT_ATOL:.3g})"
    return ""


def check_training_device(requested: str, *, step: StepFn = tiny_step, seed: int = 0) -> DeviceCheck:
    """Which device to train on: ``requested`` if one step there matches the CPU, else ``"cpu"``.

    Never raises for a failing device (any exception of the device step is the answer); the CPU
    is trusted and not checked against itself."""
    device = torch.device(requested)
    if device.type == "cpu":
        return DeviceCheck(requested, "cpu")
    reference = step(torch.device("cpu"), seed)
    try:
        candidate = step(device, seed)
    except Exception as exc:  # a broken driver raises anything; every failure means "do not use it"
        problem = f"a training step on {requested} failed ({type(exc).__name__}: {exc})"
    else:
        problem = compare(reference, candidate)
    if problem:
        return DeviceCheck(requested, "cpu", f"{problem}; training on the CPU instead (slower, but correct)")
    return DeviceCheck(requested, requested)
