"""Speed and memory options applied to a stage from outside the model (training/speed.py)."""

from __future__ import annotations

import pytest
import torch

from app.node.model.architecture import ModelArchitecture
from app.node.model.shard import ModelShard, lm_loss
from app.node.training.speed import (
    SpeedPlan,
    apply_speed,
    autocast,
    block_activation_bytes,
    plan_speed,
    remove_speed,
    stage_training_bytes,
)
from app.node.training.transport import OP_COMMIT, OP_FORWARD
from tests.training.training_helpers import ARCH, make_stage, tiny_config


def _saved_activation_bytes(shard: ModelShard, x: torch.Tensor) -> int:
    """Bytes autograd saves for backward during one forward, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in shard.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = max(saved.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        shard(x)
    return sum(saved.values())


# -- decisions ----------------------------------------------------------------------------------------
def test_cpu_stays_float32_eager_by_default() -> None:
    plan = plan_speed("cpu")
    assert plan == SpeedPlan(autocast_bf16=False, compile=False, checkpoint_activations=False)
    whole = ModelShard.full(ARCH)
    with autocast("cpu", plan.autocast_bf16):
        out = whole(torch.zeros(1, 4, dtype=torch.long))
    assert out.dtype == torch.float32
    stage = make_stage((0, ARCH.layers), tiny_config())
    assert stage.speed == plan


def test_cuda_gets_bf16_autocast_and_compile_unless_compile_is_refused() -> None:
    plan = plan_speed(torch.device("cuda", 0))
    assert plan.autocast_bf16 and plan.compile and not plan.checkpoint_activations
    assert not plan_speed("cuda", compile=False).compile
    assert plan_speed("cpu", compile=True).compile


def test_checkpointing_is_planned_only_when_the_budget_needs_it() -> None:
    arch, layers, tokens = ModelArchitecture.genesis(), 11, 8 * 256
    plain = stage_training_bytes(arch, layers, tokens)
    saved = stage_training_bytes(arch, layers, tokens, checkpoint_activations=True)
    assert saved < plain
    roomy = plan_speed("cpu", arch=arch, layers=layers, tokens_in_flight=tokens, memory_budget_bytes=plain)
    tight = plan_speed("cpu", arch=arch, layers=layers, tokens_in_flight=tokens, memory_budget_bytes=plain - 1)
    unknown = plan_speed("cpu", arch=arch, layers=layers, tokens_in_flight=tokens)
    assert not roomy.checkpoint_activations and not unknown.checkpoint_activations
    assert tight.checkpoint_activations
    assert any("activation checkpointing" in r for r in tight.reasons)


@pytest.mark.parametrize("arch", [ModelArchitecture.tiny(), ModelArchitecture.genesis().with_changes(max_seq=64)])
def test_activation_estimate_covers_what_autograd_saves(arch: ModelArchitecture) -> None:
    torch.manual_seed(0)
    shard = ModelShard(arch, 0, 2, with_embedding=False, with_head=False)
    x = torch.randn(2, 32, arch.hidden, requires_grad=True)
    measured = _saved_activation_bytes(shard, x)
    estimate = 2 * block_activation_bytes(arch, 2 * 32)
    assert measured <= estimate < 1.5 * measured


# -- activation checkpointing ---------------------------------------------------------------------------
def test_activation_checkpointing_gives_same_gradients() -> None:
    torch.manual_seed(1)
    arch = ModelArchitecture.tiny()
    plain = ModelShard.full(arch)
    ckpt = ModelShard.full(arch)
    ckpt.load_state_dict(plain.state_dict())
    apply_speed(ckpt, SpeedPlan(checkpoint_activations=True))
    ids = torch.randint(0, 256, (2, 16))
    for model in (plain, ckpt):
        lm_loss(model(ids[:, :-1]), ids[:, 1:]).backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_checkpointing_saves_only_block_inputs_and_keeps_the_state_dict() -> None:
    torch.manual_seed(2)
    shard = ModelShard(ARCH, 0, 3, with_embedding=False, with_head=False)
    keys = list(shard.state_dict())
    x = torch.randn(2, 32, ARCH.hidden, requires_grad=True)
    plain = _saved_activation_bytes(shard, x)
    apply_speed(shard, SpeedPlan(checkpoint_activations=True))
    saved = _saved_activation_bytes(shard, x)
    assert list(shard.state_dict()) == keys
    assert saved < plain / 5
    remove_speed(shard)
    assert _saved_activation_bytes(shard, x) == plain


def test_checkpointed_stage_trains_to_the_same_losses() -> None:
    config = tiny_config(micro_batches=1)
    gen = torch.Generator().manual_seed(3)
    batch = torch.randint(0, ARCH.vocab, (config.batch_size, 17), generator=gen)
    ids, targets = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
    losses = {}
    for name, plan in (("plain", SpeedPlan()), ("ckpt", SpeedPlan(checkpoint_activations=True))):
        stage = make_stage((0, ARCH.layers), config, speed=plan)
        run = []
        for step in range(3):
            meta, _ = stage.handle_sync(OP_FORWARD, {"driver": "d", "step": step, "mb": 0}, [ids, targets])
            stage.handle_sync(OP_COMMIT, {"driver": "d", "step": step, "microbatches": 1}, [])
            run.append(meta["loss"])
        losses[name] = run
    assert losses["ckpt"] == pytest.approx(losses["plain"], abs=1e-5)
    assert losses["plain"][-1] < losses["plain"][0]


def test_generation_with_a_cache_bypasses_checkpointing() -> None:
    from app.node.model.generation import generate

    torch.manual_seed(4)
    whole = ModelShard.full(ARCH).eval()
    expected = generate([whole], [1, 2, 3], 5, temperature=0)
    apply_speed(whole, SpeedPlan(checkpoint_activations=True))
    assert generate([whole], [1, 2, 3], 5, temperature=0) == expected


# -- compile ------------------------------------------------------------------------------------------------
def test_a_failing_compile_falls_back_to_eager_and_is_reported_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(fn):  # noqa: ANN001, ANN202 — a compiler that cannot build anything here
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise RuntimeError("no C compiler found")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    torch.manual_seed(5)
    shard = ModelShard.full(ARCH)
    ids = torch.randint(0, 256, (2, 8))
    expected = shard(ids)
    reports: list[str] = []
    reporter = apply_speed(shard, SpeedPlan(compile=True), on_compile_fallback=reports.append)
    assert torch.equal(shard(ids), expected)
    assert torch.equal(shard(ids), expected)
    assert len(reports) == 1 and "no C compiler found" in reports[0]
    assert reporter.failure == reports[0]
