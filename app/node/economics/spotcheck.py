"""Optimistic verification: a staked verify-mode node re-runs a sampled micro-batch of a claimed
training step on the same layer weights and compares the outputs (seed 001, "lazy compute:
PoNW spot-checks, 2x stake slash").

Which proofs a checker examines is a deterministic draw from (proof id, checker node id), so a
prover cannot know in advance who will check it, and each checker examines about
``spot_check_rate`` of the proofs it sees (5 %, original implementation). The prover keeps the
inputs and outputs of its step for the challenge window and serves them on request (a
``StepSample``; moving it is the P2P layer's job). The checker's verdict becomes a signed
``challenge`` record; the ledger settles it when the window closes (``settlement.py``).

Tolerances: the same fp32 layer on two machines differs by reduction order only, ~1e-6 relative;
``rtol = 1e-3, atol = 1e-4`` leave room for bf16/TF32 kernels while a node that skipped the
computation (noise, zeros, stale outputs) is off by O(1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.crypto.keys import PrivateKey
from app.node.economics.constants import EconomicsConfig
from app.node.economics.records import Record


@dataclass(frozen=True)
class StepSample:
    """One micro-batch of a claimed step: the layer input and the output the prover reported."""

    proof_id: str
    layer_index: int
    inputs: Any  # torch.Tensor
    outputs: Any  # torch.Tensor


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    max_abs_error: float
    evidence: bytes  # SHA-256 of the checker's own outputs, signed into the challenge record


def should_check(proof_id: str, checker_node_id: bytes, rate: float) -> bool:
    """Deterministic sample: True for about ``rate`` of (proof, checker) pairs."""
    digest = hashlib.sha256(bytes.fromhex(proof_id) + checker_node_id).digest()
    return int.from_bytes(digest[:8], "big") < int(rate * 2**64)


def spot_check(layer: Callable[[Any], Any], sample: StepSample, config: EconomicsConfig) -> CheckResult:
    """Re-runs ``layer`` (the checker's copy of the same weights) on the sample's inputs."""
    import torch  # lazy: the ledger and wallet never need torch

    with torch.no_grad():
        mine = layer(sample.inputs).detach().to(torch.float32).contiguous()
    claimed = torch.as_tensor(sample.outputs).detach().to(torch.float32)
    evidence = hashlib.sha256(mine.cpu().numpy().tobytes()).digest()
    if claimed.shape != mine.shape or not bool(torch.isfinite(claimed).all()):
        return CheckResult(False, float("inf"), evidence)
    error = float((mine - claimed).abs().max()) if mine.numel() else 0.0
    passed = bool(torch.allclose(mine, claimed, rtol=config.spot_check_rtol, atol=config.spot_check_atol))
    return CheckResult(passed, error, evidence)


def challenge_record(key: PrivateKey, config: EconomicsConfig, proof_id: str, result: CheckResult,
                     seq: int, timestamp_ms: int) -> Record:
    """The checker's signed verdict; "fail" locks its challenge bond until settlement."""
    body = {"proof_id": proof_id, "verdict": "pass" if result.passed else "fail",
            "evidence": result.evidence.hex()}
    return Record.create(key, "challenge", config.network_id, timestamp_ms, body, seq=seq)
