"""A stage serving two drivers: the weights change in place between one driver's forward and its
backward (the other driver's commit, a DiLoCo outer step). The backward must still work, on the
current weights, never with autograd's "modified by an inplace operation" error."""

from __future__ import annotations

import torch

from app.node.training.transport import OP_BACKWARD, OP_COMMIT, OP_FORWARD
from tests.training.training_helpers import ARCH, make_stage, tiny_config


def _hidden(seed: int) -> torch.Tensor:
    return torch.randn(2, 8, ARCH.hidden, generator=torch.Generator().manual_seed(seed))


def _forward(stage, driver: str, seed: int) -> torch.Tensor:  # noqa: ANN001
    meta, out = stage.handle_sync(OP_FORWARD, {"driver": driver, "step": 0, "mb": 0}, [_hidden(seed)])
    assert meta.get("status", "ok") == "ok", meta
    return out[0]


def _backward(stage, driver: str, grad: torch.Tensor):  # noqa: ANN001, ANN202
    return stage.handle_sync(OP_BACKWARD, {"driver": driver, "step": 0, "mb": 0}, [grad])


def test_backward_after_another_drivers_commit_recomputes_on_the_current_weights() -> None:
    stage = make_stage((1, 2), tiny_config())  # a middle stage: hidden states in, hidden states out
    out_a, out_b = _forward(stage, "a", 1), _forward(stage, "b", 2)
    meta, grads = _backward(stage, "a", torch.ones_like(out_a))
    assert meta["status"] == "ok" and grads[0].shape == out_a.shape
    meta, _ = stage.handle_sync(OP_COMMIT, {"driver": "a", "step": 0, "microbatches": 1, "loss": 1.0}, [])
    assert meta["status"] == "ok"
    meta, grads = _backward(stage, "b", torch.ones_like(out_b))  # b's forward ran on the old weights
    assert meta["status"] == "ok" and grads[0].shape == out_b.shape and torch.isfinite(grads[0]).all()
    # the input gradient is the one of the current weights at b's input
    x = _hidden(2).requires_grad_()
    stage.shard(x).backward(torch.ones_like(out_b))
    assert torch.allclose(grads[0], x.grad, atol=1e-6)
    meta, _ = stage.handle_sync(OP_COMMIT, {"driver": "b", "step": 0, "microbatches": 1, "loss": 1.0}, [])
    assert meta["status"] == "ok" and stage.inner_step == 2


def test_backward_after_an_in_place_weight_change_by_the_outer_step() -> None:
    stage = make_stage((1, 2), tiny_config())
    out = _forward(stage, "a", 3)
    with stage.lock, torch.no_grad():  # what DiLoCo's apply_outer does to the parameters
        for p in stage.params:
            p.mul_(0.5)
    meta, grads = _backward(stage, "a", torch.ones_like(out))
    assert meta["status"] == "ok" and torch.isfinite(grads[0]).all()


def test_an_unchanged_graph_is_used_as_it_is() -> None:
    stage = make_stage((1, 2), tiny_config())
    out = _forward(stage, "a", 4)
    calls = []
    stage.shard.register_forward_hook(lambda *_: calls.append(1))
    meta, _ = _backward(stage, "a", torch.ones_like(out))
    assert meta["status"] == "ok" and calls == []  # no recomputation when the weights did not change
