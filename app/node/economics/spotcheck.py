"""Verification by re-execution: what a training proof commits to, and how a verifier checks it.

A training proof's ``work_root`` commits to the steps it claims: one leaf per step, the SHA-256
of (weights hash before the step, hash of the step's first micro-batch inputs, hash of the output
the prover computed from them). The prover keeps, for the challenge window, what each leaf names
and serves it on request (a ``StepSample``). A verifier (mode "verify", staked) picks a step with
a draw the prover cannot predict (proof id x verifier id), fetches the sample, checks that it is
the committed one (leaf and root), re-runs the forward of those inputs on those weights with its
own copy of the model code, and compares its output with the prover's:

* **bitwise** where the computation is deterministic (same kernels, same thread count: the usual
  case between CPU nodes of one build), reported in the evidence;
* otherwise within a bound: ``|mine - claimed| <= atol + rtol * |mine|`` elementwise with
  ``rtol = 1e-3, atol = 1e-4``. The same fp32 layer differs between machines by reduction order,
  about 1e-6 relative. A prover that computed in bf16 autocast (CUDA) says so in its sample, and
  its output is compared with ``BF16_TOLERANCE`` (5e-2 both ways): bf16 keeps 8 bits of mantissa,
  about 4e-3 relative per operation, compounding over a block. A prover that did not compute the
  step (noise, zeros, another step's output) is off by O(1) either way, which is also why the
  flag need not be committed: claiming bf16 only widens the bound to 5e-2.

A sample that does not match the commitment, or that the prover cannot serve, fails: committed
work must be available for checking during its window. The verdict becomes a signed
``challenge`` record whose evidence (step, leaf, the verifier's output hash, error) names exactly
what another verifier re-runs to confirm or refute it; the ledger slashes only when at least
``challenge_confirmations`` staked verifiers agree and outnumber those who refute
(``settlement.py``), so one honest verifier suffices to stop a griefer (Verde's refereed
delegation, applied to sampled steps instead of a bisection over the whole computation).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.crypto.keys import PrivateKey
from app.node.economics.constants import EconomicsConfig
from app.node.economics.records import Record

NO_SAMPLE = b"\0" * 32
"""Leaf and output hash of a challenge whose prover served nothing (or something uncommitted)."""
MAX_ERROR_PPM = 10**12
BF16_TOLERANCE = 5e-2
"""rtol and atol for outputs the prover computed in bf16 autocast (see the module docstring)."""


def tensor_hash(tensors: Sequence[Any] | dict[str, Any]) -> bytes:
    """SHA-256 over dtype, shape and raw little-endian bytes of each tensor (names sorted for a
    dict): the same tensors hash the same on every node."""
    import torch  # lazy: the ledger and wallet never need torch

    items = sorted(tensors.items()) if isinstance(tensors, dict) else [(str(i), t) for i, t in enumerate(tensors)]
    h = hashlib.sha256()
    for name, tensor in items:
        t = torch.as_tensor(tensor).detach().cpu().contiguous()
        header = f"{name}|{t.dtype}|{tuple(t.shape)}".encode()
        h.update(struct.pack("<I", len(header)) + header)
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()


def leaf(weights_hash: bytes, inputs_hash: bytes, outputs_hash: bytes) -> bytes:
    return hashlib.sha256(b"NSSTEP1" + weights_hash + inputs_hash + outputs_hash).digest()


def work_root(leaves: Sequence[bytes]) -> bytes:
    """The commitment to an epoch's steps; the verifier receives all leaves (32 bytes a step)."""
    return hashlib.sha256(b"NSROOT1" + struct.pack("<I", len(leaves)) + b"".join(leaves)).digest()


@dataclass(frozen=True)
class StepSample:
    """What the prover serves for one committed step."""

    step: int  # index of the step in the proof's leaves
    leaves: tuple[bytes, ...]
    weights: dict[str, Any]  # name -> tensor: the weights before the step
    inputs: tuple[Any, ...]  # the micro-batch: token ids (+ targets) or hidden states
    outputs: Any  # what the prover computed from them (loss or activations)
    bf16: bool = False  # computed under bf16 autocast: compared with BF16_TOLERANCE


@dataclass(frozen=True)
class Evidence:
    """Signed into the challenge: exactly what another verifier re-runs."""

    step: int
    leaf: bytes
    output_hash: bytes  # SHA-256 of the verifier's own output (NO_SAMPLE if nothing to run)
    error_ppm: int  # max |mine - claimed| x 1e6, capped; MAX_ERROR_PPM when not comparable


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    reason: str
    evidence: Evidence
    bitwise: bool = False
    max_abs_error: float = float("inf")


def sampled_step(proof_id: str, checker_node_id: bytes, steps: int) -> int:
    """Which committed step this checker re-runs: unpredictable to the prover, fixed per pair."""
    return sampled_steps(proof_id, checker_node_id, steps, 1)[0]


def sampled_steps(proof_id: str, checker_node_id: bytes, steps: int, k: int) -> list[int]:
    """``k`` distinct committed steps (all of them if fewer) in an order fixed per (proof, checker)."""
    keyed = sorted(range(max(steps, 1)), key=lambda i: hashlib.sha256(
        b"NSPICK1" + bytes.fromhex(proof_id) + checker_node_id + i.to_bytes(4, "big")).digest())
    return keyed[:max(1, k)]


def should_check(proof_id: str, checker_node_id: bytes, rate: float) -> bool:
    """Deterministic sample: True for about ``rate`` of (proof, checker) pairs."""
    digest = hashlib.sha256(bytes.fromhex(proof_id) + checker_node_id).digest()
    return int.from_bytes(digest[:8], "big") < int(rate * 2**64)


def unavailable(step: int, reason: str) -> CheckResult:
    """The prover did not serve the committed sample: a failed check."""
    return CheckResult(False, reason, Evidence(step, NO_SAMPLE, NO_SAMPLE, MAX_ERROR_PPM))


def check_sample(proof_body: dict, sample: StepSample | None, step: int,
                 run: Callable[[dict[str, Any], tuple[Any, ...]], Any], config: EconomicsConfig) -> CheckResult:
    """Checks ``sample`` against the proof's commitment and re-runs it with ``run(weights, inputs)``."""
    import torch

    if sample is None:
        return unavailable(step, "the prover did not serve the committed step")
    if sample.step != step or not 0 <= step < len(sample.leaves):
        return unavailable(step, "the prover served another step than the one asked for")
    if work_root(sample.leaves).hex() != proof_body.get("work_root"):
        return unavailable(step, "the served steps do not match the proof's work_root")
    committed = sample.leaves[step]
    claimed_hash = tensor_hash([sample.outputs])
    if leaf(tensor_hash(sample.weights), tensor_hash(list(sample.inputs)), claimed_hash) != committed:
        return CheckResult(False, "the served weights, inputs or outputs are not the committed ones",
                           Evidence(step, committed, NO_SAMPLE, MAX_ERROR_PPM))
    try:
        with torch.no_grad():
            mine = torch.as_tensor(run(sample.weights, sample.inputs)).detach().to(torch.float32).cpu()
    except Exception as exc:  # weights or inputs that do not fit the model: the step cannot be real
        return CheckResult(False, f"the committed step does not run: {exc}",
                           Evidence(step, committed, NO_SAMPLE, MAX_ERROR_PPM))
    mine_hash = tensor_hash([mine])
    claimed = torch.as_tensor(sample.outputs).detach().to(torch.float32).cpu()
    if claimed.shape != mine.shape or not bool(torch.isfinite(claimed).all()):
        return CheckResult(False, "claimed output has another shape or is not finite",
                           Evidence(step, committed, mine_hash, MAX_ERROR_PPM))
    error = float((mine - claimed).abs().max()) if mine.numel() else 0.0
    bitwise = bool(torch.equal(mine, claimed))
    rtol, atol = config.spot_check_rtol, config.spot_check_atol
    if sample.bf16:
        rtol, atol = max(rtol, BF16_TOLERANCE), max(atol, BF16_TOLERANCE)
    passed = bitwise or bool(torch.allclose(claimed, mine, rtol=rtol, atol=atol))
    evidence = Evidence(step, committed, mine_hash, min(int(error * 1e6), MAX_ERROR_PPM))
    reason = "bitwise equal" if bitwise else (f"within tolerance (max error {error:.3g})" if passed
                                              else f"output differs by {error:.3g}")
    return CheckResult(passed, reason, evidence, bitwise, error)


def challenge_record(key: PrivateKey, config: EconomicsConfig, proof_id: str, result: CheckResult,
                     seq: int, timestamp_ms: int) -> Record:
    """The checker's signed verdict with its evidence; either verdict locks a bond until
    settlement, lost by the side the other verifiers outvote."""
    e = result.evidence
    body = {"proof_id": proof_id, "verdict": "pass" if result.passed else "fail", "step": e.step,
            "leaf": e.leaf.hex(), "output_hash": e.output_hash.hex(), "error_ppm": e.error_ppm}
    return Record.create(key, "challenge", config.network_id, timestamp_ms, body, seq=seq)
