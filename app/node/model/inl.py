"""The integrator neuron layer (INL, seed 003) and the block built around it.

In a transformer block attention's output is added to the residual stream. In an INL block it is
the *context* ``h`` of a small dynamical system that runs inside the block: a state ``x`` and a
velocity ``v`` per token and channel, integrated for ``inl_iterations`` steps by second-order
dynamics that pull ``x`` towards a learnt equilibrium ``mu``. A controller reads (h, x, v) at
every step and sets the inertia, the restoring force, a gate and a candidate velocity. The final
state is projected into the residual stream, and a GELU FFN follows, as in seed 003's language
model. Each token's dynamics are its own (attention already mixed the positions), so a KV cache
and a split into pipeline stages work exactly as for a transformer block.

The equations and their constants are those of seed 003's reference implementation (read for
understanding; this is our own code). Adaptive early stopping (seed 003's "level 1") ends the
loop at inference once every token is back at its equilibrium.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from app.node.model.architecture import INL_CONTROLLER_HIDDEN, ModelArchitecture
from app.node.model.layers import INIT_STD, Attention, LayerCache, RMSNorm

KAPPA = 1.0
"""How fast inertia fades with the distance from equilibrium: alpha = alpha_base · exp(−κ‖e‖)."""
EXCITATION_AMPLITUDE = 0.03
"""A of the deterministic harmonic excitation A · sin(γt + φ), seed 003's replacement for noise."""
GAMMA_MEAN, GAMMA_STD = 1.0, 0.1
"""Each channel's excitation frequency γ is drawn once from N(1, 0.1) and then fixed."""
DT = 0.1
"""Integration step: x' = x + DT · g · v'."""
ALPHA_INIT, BETA_INIT, GATE_INIT = 0.8, 0.5, 0.5
"""The controller's outputs at initialisation (its output weights are small, its biases set so)."""
STOP_THRESHOLD = 0.01
MIN_ITERATIONS = 3
"""Adaptive stopping: at inference, stop once ‖x − mu‖ < 0.01 for every token, but never before
3 steps (seed 003: a minimum of 2-3)."""


class IntegratorController(nn.Module):
    """Three small linear layers read (h, x, v) into 64 ReLU units; one output layer writes the
    four controls per channel: alpha_base (sigmoid), beta (softplus), gate g (sigmoid) and the
    candidate velocity. ``read_h`` depends only on the context, so it is applied once per block."""

    def __init__(self, hidden: int, width: int = INL_CONTROLLER_HIDDEN) -> None:
        super().__init__()
        self.read_h = nn.Linear(hidden, width)
        self.read_x = nn.Linear(hidden, width, bias=False)
        self.read_v = nn.Linear(hidden, width, bias=False)
        self.write = nn.Linear(width, 4 * hidden)

    def forward(self, context: torch.Tensor, x: torch.Tensor,
                v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``context`` is ``read_h(h)``; returns (alpha_base, beta, g, v_cand), each like ``x``."""
        z = F.relu(context + self.read_x(x) + self.read_v(v))
        a, b, g, v_cand = self.write(z).chunk(4, dim=-1)
        return torch.sigmoid(a), F.softplus(b), torch.sigmoid(g), v_cand

    def init_weights(self) -> None:
        for lin in (self.read_h, self.read_x, self.read_v, self.write):
            nn.init.normal_(lin.weight, std=INIT_STD)
        nn.init.zeros_(self.read_h.bias)
        hidden = self.write.out_features // 4
        with torch.no_grad():
            bias = self.write.bias.view(4, hidden)
            bias[0].fill_(math.log(ALPHA_INIT / (1 - ALPHA_INIT)))  # sigmoid⁻¹(0.8)
            bias[1].fill_(math.log(math.expm1(BETA_INIT)))  # softplus⁻¹(0.5)
            bias[2].fill_(math.log(GATE_INIT / (1 - GATE_INIT)))  # sigmoid⁻¹(0.5) = 0
            bias[3].zero_()


class IntegratorNeuronLayer(nn.Module):
    """The dynamics, ``iterations`` steps from x0 = mu, v0 = 0; returns the final state x."""

    def __init__(self, hidden: int, iterations: int) -> None:
        super().__init__()
        self.iterations = iterations
        self.controller = IntegratorController(hidden)
        self.mu = nn.Parameter(torch.zeros(hidden))
        self.phi = nn.Parameter(torch.zeros(hidden))
        self.register_buffer("gamma", torch.full((hidden,), GAMMA_MEAN))
        self.adaptive_stop = True
        self.record_error = False  # keep e = x − mu of the last training forward (the losses' input)
        self.last_error: torch.Tensor | None = None
        self._inference_forwards = 0
        self._inference_iterations = 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        context = self.controller.read_h(h)
        x = self.mu.expand_as(h)
        v = torch.zeros_like(h)
        inference = not torch.is_grad_enabled()
        steps = self.iterations
        for t in range(self.iterations):
            e = x - self.mu
            alpha_base, beta, g, v_cand = self.controller(context, x, v)
            alpha = alpha_base * torch.exp(-KAPPA * e.norm(dim=-1, keepdim=True))
            v = (alpha * v + (1 - alpha) * v_cand - beta * e
                 + EXCITATION_AMPLITUDE * torch.sin(self.gamma * t + self.phi))
            x = x + DT * g * v
            if inference and self.adaptive_stop and t + 1 >= MIN_ITERATIONS \
                    and bool((x - self.mu).norm(dim=-1).max() < STOP_THRESHOLD):
                steps = t + 1
                break
        if inference:
            self._inference_forwards += 1
            self._inference_iterations += steps
        elif self.record_error:
            self.last_error = x - self.mu
        return x

    def mean_inference_iterations(self) -> float | None:
        """Mean integration steps per forward at inference since the last reset (None if none)."""
        if not self._inference_forwards:
            return None
        return self._inference_iterations / self._inference_forwards

    def reset_inference_stats(self) -> None:
        self._inference_forwards = self._inference_iterations = 0

    def init_weights(self) -> None:
        self.controller.init_weights()
        nn.init.zeros_(self.mu)
        nn.init.zeros_(self.phi)
        with torch.no_grad():
            self.gamma.normal_(GAMMA_MEAN, GAMMA_STD)


class GeluFFN(nn.Module):
    """``down(gelu(up(x)))``: the FFN of seed 003's blocks."""

    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.up_proj = nn.Linear(hidden, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x)))


class INLBlock(nn.Module):
    """Pre-norm INL block: attention gives the context, the integrator runs on it and its final
    state is added to the residual stream, then a GELU FFN is added."""

    def __init__(self, arch: ModelArchitecture) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(arch.hidden, arch.norm_eps)
        self.attn = Attention(arch)
        self.inl = IntegratorNeuronLayer(arch.hidden, arch.inl_iterations)
        self.out_proj = nn.Linear(arch.hidden, arch.hidden, bias=False)
        self.ffn_norm = RMSNorm(arch.hidden, arch.norm_eps)
        self.ffn = GeluFFN(arch.hidden, arch.ffn)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: LayerCache | None = None) -> torch.Tensor:
        h = self.attn(self.attn_norm(x), cos, sin, cache)
        x = x + self.out_proj(self.inl(h))
        return x + self.ffn(self.ffn_norm(x))

    def output_projections(self) -> tuple[nn.Linear, nn.Linear]:
        """The two matrices that write into the residual stream (zeroed for identity growth)."""
        return self.out_proj, self.ffn.down_proj

    def init_weights(self, layers: int) -> None:
        for lin in (self.attn.q_proj, self.attn.k_proj, self.attn.v_proj, self.attn.o_proj,
                    self.ffn.up_proj):
            nn.init.normal_(lin.weight, std=INIT_STD)
        for lin in self.output_projections():
            nn.init.normal_(lin.weight, std=INIT_STD / math.sqrt(2 * layers))
        self.inl.init_weights()
        nn.init.ones_(self.attn_norm.weight)
        nn.init.ones_(self.ffn_norm.weight)
