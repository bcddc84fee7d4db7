"""The GPU safety net (device_check.py) and the stage's transport boundary, on the CPU.

The device step is injected: a step that raises or computes something else stands for a broken
GPU driver; the reference step is always the real StageWorker step on the CPU.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest
import torch
from training_helpers import ARCH, make_stage, tiny_config

from app.node import hardware
from app.node.config import NodeConfig
from app.node.engine import NodeEngine
from app.node.events import ErrorOccurred, Event, StepDone
from app.node.runtime import create_runtime
from app.node.runtime_api import RuntimeContext
from app.node.training.device_check import (
    WEIGHT_ATOL,
    StepOutcome,
    check_training_device,
    compare,
    tiny_step,
)
from app.node.training.transport import OP_BACKWARD, OP_FORWARD


def _cpu_step(_device: torch.device, seed: int) -> StepOutcome:
    return tiny_step(torch.device("cpu"), seed)


def test_cpu_is_trusted_without_running_a_step() -> None:
    def never(_device: torch.device, _seed: int) -> StepOutcome:
        raise AssertionError("the CPU is not checked against itself")

    check = check_training_device("cpu", step=never)
    assert check.ok and check.device == "cpu"


def test_a_device_that_matches_the_cpu_is_used() -> None:
    check = check_training_device("cuda:1", step=_cpu_step)
    assert check.ok and check.device == "cuda:1" and check.requested == "cuda:1"


def test_a_device_whose_step_raises_falls_back_to_the_cpu() -> None:
    def broken(device: torch.device, seed: int) -> StepOutcome:
        if device.type != "cpu":
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
        return tiny_step(device, seed)

    check = check_training_device("cuda:0", step=broken)
    assert not check.ok and check.device == "cpu"
    assert "no kernel image" in check.problem and "training on the CPU instead" in check.problem


def test_a_device_that_computes_garbage_falls_back_to_the_cpu() -> None:
    def noisy(device: torch.device, seed: int) -> StepOutcome:
        out = tiny_step(torch.device("cpu"), seed)
        if device.type == "cpu":
            return out
        weights = dict(out.weights)
        name = sorted(weights)[-1]
        weights[name] = weights[name] + 10 * WEIGHT_ATOL  # a wrong update; the losses still agree
        return StepOutcome(out.loss_before, out.loss_after, weights)

    check = check_training_device("mps", step=noisy)
    assert check.device == "cpu" and "differs from the CPU's" in check.problem


def test_compare_flags_nan_and_wrong_losses_but_accepts_last_bit_noise() -> None:
    ref = tiny_step(torch.device("cpu"), 3)
    jitter = {k: v + 1e-6 for k, v in ref.weights.items()}
    assert compare(ref, StepOutcome(ref.loss_before * (1 + 1e-6), ref.loss_after, jitter)) == ""
    assert "loss is nan" in compare(ref, StepOutcome(float("nan"), ref.loss_after, ref.weights))
    assert "loss after one step" in compare(ref, StepOutcome(ref.loss_before, ref.loss_after + 1.0, ref.weights))
    zeros = {k: torch.zeros_like(v) for k, v in ref.weights.items()}
    assert "differs" in compare(ref, StepOutcome(ref.loss_before, ref.loss_after, zeros))


def test_the_check_step_learns_and_is_deterministic() -> None:
    a, b = tiny_step(torch.device("cpu"), 0), tiny_step(torch.device("cpu"), 0)
    assert a.loss_after < a.loss_before
    assert a.loss_before == b.loss_before and all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)


def test_tensors_handed_to_the_transport_are_contiguous_cpu_copies() -> None:
    config = tiny_config()
    first, last = make_stage((0, 2), config, device="cpu"), make_stage((2, ARCH.layers), config)
    ids = torch.randint(0, ARCH.vocab, (2, 8))
    meta = {"driver": "d", "step": 0, "mb": 0}
    _, (x,) = first.handle_sync(OP_FORWARD, meta, [ids])
    # a non-contiguous input (a transposed view) is accepted and the outputs are still contiguous
    x_t = x.detach().clone().transpose(0, 1).contiguous().transpose(0, 1)
    assert not x_t.is_contiguous()
    _, (grad,) = last.handle_sync(OP_FORWARD, meta, [x_t, ids])
    _, grads = first.handle_sync(OP_BACKWARD, meta, [grad])
    for t in (x, grad):
        assert t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad
    assert grads == []  # the first stage's input is token ids: no gradient goes back
    state = last.state_for_transfer()
    before = last.weights_hash()
    for t in state.values():
        assert t.device.type == "cpu" and t.is_contiguous()
        t.zero_()  # the caller owns its copy: training weights are untouched
    assert last.weights_hash() == before


# --- the runtime falls back when its measured GPU cannot train ---------------------------------
TRAINING = {"model": "tiny", "batch_size": 4, "micro_batches": 2, "seq_len": 32, "lr": 3e-3,
            "warmup_steps": 0, "inner_steps": 3, "checkpoint_every": 100, "linger_s": 0.0}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA does not work")
def test_runtime_reports_an_unusable_gpu_and_trains_on_the_cpu(tmp_path: Path) -> None:
    """The engine measured a CUDA device (we say so: this machine has none, so a step on it
    really fails, as on a volunteer's broken driver): the runtime emits a non-fatal error and
    trains on the CPU, advertising a tier measured on the CPU."""
    report = hardware.HardwareReport(hardware.detect_device("cpu"), 20.0, hardware.tier_for_ms(20.0),
                                     torch.__version__, time.time())
    hardware.save_cache(tmp_path, report)
    events: list[Event] = []
    lock = threading.Lock()
    runtimes = []

    def factory(ctx: RuntimeContext):  # noqa: ANN202
        gpu = dataclasses.replace(ctx.hardware.device, device="cuda", name="Broken GPU", index=0)
        ctx.hardware = dataclasses.replace(ctx.hardware, device=gpu, tier=hardware.SpeedTier.T1)
        runtimes.append(create_runtime(ctx))
        return runtimes[-1]

    def record(event: Event) -> None:
        with lock:
            events.append(event)

    engine = NodeEngine(NodeConfig(data_dir=tmp_path, port=0, max_steps=2, training=dict(TRAINING)),
                        runtime_factory=factory)
    engine.subscribe(record)
    engine.start()
    assert engine.wait(timeout=120) and engine.exit_code == 0
    with lock:
        errors = [e for e in events if isinstance(e, ErrorOccurred)]
        steps = [e for e in events if isinstance(e, StepDone)]
    assert any("Broken GPU" in e.message and "cuda:0" in e.message and not e.fatal for e in errors)
    assert [s.step for s in steps] == [1, 2]
    runtime = runtimes[0]
    assert runtime.device == "cpu" and runtime.stage.device == torch.device("cpu")
    assert runtime.offer[0] != "T1"  # the tier it announced is the CPU's, not the GPU's
