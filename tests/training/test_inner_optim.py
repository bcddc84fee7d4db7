"""InnerAdamW makes exactly torch.optim.AdamW's update (without its 8 s import)."""

from __future__ import annotations

import torch

from app.node.training.inner_optim import InnerAdamW


def test_inner_adamw_matches_torch_adamw_over_several_steps() -> None:
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    mine = InnerAdamW(ours, lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    for _ in range(6):
        grads = [torch.randn_like(p) for p in ours]
        for p, q, g in zip(ours, theirs, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        mine.step()
        ref.step()
        mine.zero_grad()
    for p, q in zip(ours, theirs, strict=True):
        assert torch.allclose(p, q, atol=1e-6)
    assert all(p.grad is None for p in ours)
