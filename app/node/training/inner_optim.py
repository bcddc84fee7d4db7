"""InnerAdamW: the inner optimiser of every stage (AdamW, Loshchilov & Hutter 2019).

Numerically the same update as ``torch.optim.AdamW`` (bias-corrected moments, decoupled weight
decay; a test pins the equality). It exists because constructing ``torch.optim.AdamW`` imports
``torch._dynamo`` — about 8 s of CPU per process here (PLATFORM.md machine), paid by every node
of a devnet at once and by the GUI's engine thread at start. State per parameter is
``{"step", "exp_avg", "exp_avg_sq"}`` like torch's, so checkpoints read the same. The moments
live on their parameter's device; ``step`` is a CPU scalar on every device (it is read with
``float()`` each step, which on a GPU tensor would wait for the device). ``lr_at`` is the
schedule a stage sets before each inner step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from app.node.training.config import TrainingConfig


class InnerAdamW:
    def __init__(self, params: Iterable[torch.nn.Parameter], *, lr: float, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.state: dict[torch.nn.Parameter, dict[str, torch.Tensor]] = {}

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for p in self.params:
            if p.grad is None:
                continue
            st = self.state.get(p)
            if st is None:
                st = self.state[p] = {"step": torch.zeros(()), "exp_avg": torch.zeros_like(p),
                                      "exp_avg_sq": torch.zeros_like(p)}
            st["step"] += 1
            t = float(st["step"])
            p.mul_(1 - self.lr * self.weight_decay)
            st["exp_avg"].lerp_(p.grad, 1 - beta1)
            st["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = (st["exp_avg_sq"].sqrt() / (1 - beta2**t) ** 0.5).add_(self.eps)
            p.addcdiv_(st["exp_avg"], denom, value=-self.lr / (1 - beta1**t))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def lr_at(step: int, config: TrainingConfig) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak over ``decay_steps``."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.decay_steps))
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
