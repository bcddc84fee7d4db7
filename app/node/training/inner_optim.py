"""InnerAdamW: the inner optimiser of every stage (AdamW, Loshchilov & Hutter 2019).

Numerically the same update as ``torch.optim.AdamW`` (bias-corrected moments, decoupled weight
decay; a test pins the equality). It exists because constructing ``torch.optim.AdamW`` imports
``torch._dynamo`` — about 8 s of CPU per process here (PLATFORM.md machine), paid by every node
of a devnet at once and by the GUI's engine thread at start. State per parameter is
``{"step", "exp_avg", "exp_avg_sq"}`` like torch's, so checkpoints read the same. The moments
live on their parameter's device; ``step`` is a CPU scalar on every device (it is read with
``float()`` each step, which on a GPU tensor would wait for the device).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


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
