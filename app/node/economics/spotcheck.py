"""Verification by re-execution: what a training proof commits to, and how a verifier checks it.

A training proof's ``work_root`` commits to the steps it claims: one leaf per step, the SHA-256
over every tensor of the step (``step_leaf``) and its scalars. A step is the whole training step
of one stage: the weights and the inner AdamW moments before it, every micro-batch's inputs (token
ids, targets or hidden states) and, for a stage without the head, the gradient of its output that
came back from downstream, the output it computed for each micro-batch (loss or activations), the
order the micro-batches' gradients were added in, the inner step number, the whole model's
gradient norm the driver sent for clipping, and the weights after the optimizer step. The prover
keeps these for the challenge window and serves them (a ``StepSample``). A verifier (mode
"verify", staked) draws steps with a private salt the prover cannot predict, fetches them, checks
that each is the committed one (leaf and root), and re-executes it with its own copy of the code:
forward, backward and the optimizer step on the served weights (``runtime/verification.py`` replays
it through a real StageWorker, with the learning-rate schedule, weight decay and clipping of its
own training configuration, never the prover's). It then compares:

* **bitwise** where the computation is deterministic: same kernels, same thread count (the usual
  case between CPU nodes of one build). Every output and every weight after the step equal.
* otherwise within a bound. Outputs: ``|mine - claimed| <= atol + rtol * |mine|`` elementwise with
  ``rtol = 1e-3, atol = 1e-4`` (the same fp32 layer differs between machines by reduction order,
  about 1e-6 relative). The update: weight decay is known exactly, so what is compared is the
  optimizer's own part, ``u = after - before * (1 - lr * weight_decay)``, as the relative L2 error
  ``||u_mine - u_claimed|| / ||u_mine||`` over the step's weights, at most ``UPDATE_RTOL`` (1e-2).
  AdamW divides each moment by its own scale, so 1e-6 noise in a gradient stays ~1e-6 in the
  update except where the second moment is near ``eps``; 1e-2 leaves four orders of margin.
  A prover that computed in bf16 autocast (CUDA) says so, and is compared with ``BF16_TOLERANCE``
  (5e-2) for outputs and ``BF16_UPDATE_RTOL`` (0.5) for the update: bf16 keeps 8 bits of mantissa,
  ~4e-3 relative per operation, and small gradient elements can change sign.

A step whose re-executed update is exactly zero fails whatever the prover claimed: a real
AdamW step always moves the weights beyond the decay, and served moments could otherwise scale
the update below float32 resolution so that the decay alone, written down without a backward,
matches bitwise. (The claimed whole-model gradient norm, the other served scale, is bounded by the
stage's own norm in ``runtime/verification.py``.)

What a lazy prover is off by: a step it did not run (noise, zeros, another step's output) misses
the outputs by O(1); a step whose backward or update it skipped (weights after = before, or only
the decay) has update error exactly 1.0; random weights after have error far above 1. All fail
even under the bf16 bounds, which is why the bf16 flag need not be proven.

A sample that does not match the commitment, or that the prover cannot serve, fails: committed
work must be available for checking during its window. The verdict becomes a signed
``challenge`` record whose evidence (step, leaf, the hash of the verifier's own outputs and
weights after, error) names exactly what another verifier re-runs to confirm or refute it; the
ledger slashes only when at least ``challenge_confirmations`` staked verifiers agree and outnumber
those who refute (``settlement.py``), so one honest verifier suffices to stop a griefer (Verde's
refereed delegation, applied to sampled steps instead of a bisection over the whole computation).
"""

from __future__ import annotations

import hashlib
import json
import math
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
UPDATE_RTOL = 1e-2
"""Relative L2 error allowed on the optimizer's part of the update (module docstring)."""
BF16_UPDATE_RTOL = 0.5
"""The same for a prover that computed in bf16 autocast."""
WEIGHTS, MOMENT1, MOMENT2, MOMENT_STEP, INPUT, GRAD, OUTPUT, AFTER = "w.", "m.", "v.", "t.", "in.", "g.", "out.", "a."
"""Name prefixes of a step's tensors: weights before, AdamW moments (exp_avg, exp_avg_sq, step)
before, micro-batch inputs (``in.<mb>.<i>``), output gradients (``g.<mb>``), outputs
(``out.<mb>``), weights after."""


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


def step_leaf(tensors: dict[str, Any], meta: dict[str, Any]) -> bytes:
    """The commitment to one step: every tensor of it and its scalars (``StepSample``)."""
    scalars = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(b"NSSTEP2" + tensor_hash(tensors) + hashlib.sha256(scalars).digest()).digest()


def work_root(leaves: Sequence[bytes]) -> bytes:
    """The commitment to an epoch's steps; the verifier receives all leaves (32 bytes a step)."""
    return hashlib.sha256(b"NSROOT1" + struct.pack("<I", len(leaves)) + b"".join(leaves)).digest()


@dataclass(frozen=True)
class StepSample:
    """What the prover serves for one committed step: its tensors by the prefixes above and its
    scalars (layer_range, with_embedding, with_head, bf16, microbatches, order, inner_step,
    grad_norm)."""

    step: int  # index of the step in the proof's leaves
    leaves: tuple[bytes, ...]
    tensors: dict[str, Any]
    meta: dict[str, Any]

    @property
    def bf16(self) -> bool:
        return self.meta.get("bf16") is True

    def part(self, prefix: str) -> dict[str, Any]:
        """The tensors named ``prefix + name``, by name."""
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


@dataclass(frozen=True)
class ReRun:
    """What the verifier computed from a sample: each micro-batch's output (``out.<mb>``), the
    weights after the step, and the weights after weight decay alone (what the update is measured
    from)."""

    outputs: dict[str, Any]
    weights_after: dict[str, Any]
    decayed: dict[str, Any]


@dataclass(frozen=True)
class Evidence:
    """Signed into the challenge: exactly what another verifier re-runs."""

    step: int
    leaf: bytes
    output_hash: bytes  # SHA-256 of the verifier's own outputs and weights after (NO_SAMPLE if nothing ran)
    error_ppm: int  # max error x 1e6, capped; MAX_ERROR_PPM when not comparable


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    reason: str
    evidence: Evidence
    bitwise: bool = False
    max_abs_error: float = float("inf")


def drawn_steps(salt: bytes, proof_id: str, steps: int, rate: float, cap: int) -> list[int]:
    """The committed steps a verifier re-runs: each step independently with probability ``rate``
    (at most ``cap`` of them), keyed by the verifier's private ``salt`` so the prover can neither
    predict nor grind which of its steps are looked at."""
    threshold = int(rate * 2**64)
    picked = [i for i in range(steps) if int.from_bytes(hashlib.sha256(
        b"NSDRAW1" + salt + bytes.fromhex(proof_id) + i.to_bytes(4, "big")).digest()[:8], "big") < threshold]
    return picked[:max(1, cap)]


def should_check(proof_id: str, checker_node_id: bytes, rate: float) -> bool:
    """Deterministic sample: True for about ``rate`` of (proof, checker) pairs."""
    digest = hashlib.sha256(bytes.fromhex(proof_id) + checker_node_id).digest()
    return int.from_bytes(digest[:8], "big") < int(rate * 2**64)


def unavailable(step: int, reason: str) -> CheckResult:
    """The prover did not serve the committed sample: a failed check."""
    return CheckResult(False, reason, Evidence(step, NO_SAMPLE, NO_SAMPLE, MAX_ERROR_PPM))


def check_sample(proof_body: dict, sample: StepSample | None, step: int, run: Callable[[StepSample], ReRun],
                 config: EconomicsConfig) -> CheckResult:
    """Checks ``sample`` against the proof's commitment, re-executes it with ``run`` and compares."""
    import torch

    if sample is None:
        return unavailable(step, "the prover did not serve the committed step")
    if sample.step != step or not 0 <= step < len(sample.leaves):
        return unavailable(step, "the prover served another step than the one asked for")
    if work_root(sample.leaves).hex() != proof_body.get("work_root"):
        return unavailable(step, "the served steps do not match the proof's work_root")
    committed = sample.leaves[step]
    if step_leaf(sample.tensors, sample.meta) != committed:
        return CheckResult(False, "the served step is not the committed one",
                           Evidence(step, committed, NO_SAMPLE, MAX_ERROR_PPM))
    try:
        mine = run(sample)
    except Exception as exc:  # weights or inputs that do not fit the model: the step cannot be real
        return CheckResult(False, f"the committed step does not run: {exc}",
                           Evidence(step, committed, NO_SAMPLE, MAX_ERROR_PPM))
    ours = {k: torch.as_tensor(v).detach().to(torch.float32).cpu() for k, v in mine.outputs.items()}
    after = {k: torch.as_tensor(v).detach().to(torch.float32).cpu() for k, v in mine.weights_after.items()}
    mine_hash = tensor_hash({**ours, **{AFTER + k: v for k, v in after.items()}})
    claimed = {k: torch.as_tensor(v).detach().to(torch.float32).cpu() for k, v in sample.tensors.items()
               if k.startswith(OUTPUT)}
    claimed_after = {k: torch.as_tensor(v).detach().to(torch.float32).cpu() for k, v in sample.part(AFTER).items()}

    def shapes(d: dict) -> dict:
        return {k: tuple(v.shape) for k, v in d.items()}

    if shapes(claimed) != shapes(ours) or shapes(claimed_after) != shapes(after) or not all(
            bool(torch.isfinite(t).all()) for t in [*claimed.values(), *claimed_after.values()]):
        return CheckResult(False, "claimed outputs or weights have another shape or are not finite",
                           Evidence(step, committed, mine_hash, MAX_ERROR_PPM))
    decayed = {k: torch.as_tensor(v).detach().to(torch.float32).cpu() for k, v in mine.decayed.items()}
    if all(torch.equal(after[k], decayed[k]) for k in after):
        # A real optimizer step moves the weights beyond the decay. Served moments that make the
        # update vanish (an absurd second moment) would let a prover skip the backward unseen.
        return CheckResult(False, "the re-executed update is zero: the served optimizer state cannot be real",
                           Evidence(step, committed, mine_hash, MAX_ERROR_PPM))
    bitwise = all(torch.equal(ours[k], claimed[k]) for k in ours) and all(
        torch.equal(after[k], claimed_after[k]) for k in after)
    rtol, atol = config.spot_check_rtol, config.spot_check_atol
    update_rtol = BF16_UPDATE_RTOL if sample.bf16 else UPDATE_RTOL
    if sample.bf16:
        rtol, atol = max(rtol, BF16_TOLERANCE), max(atol, BF16_TOLERANCE)
    out_error = max((float((ours[k] - claimed[k]).abs().max()) for k in ours if ours[k].numel()), default=0.0)
    outputs_ok = all(torch.allclose(claimed[k], ours[k], rtol=rtol, atol=atol) for k in ours)
    update_error = _update_error(after, claimed_after, mine.decayed)
    error = max(out_error, update_error)
    passed = bitwise or (outputs_ok and update_error <= update_rtol)
    evidence = Evidence(step, committed, mine_hash, int(min(error * 1e6, MAX_ERROR_PPM)))
    if bitwise:
        reason = "bitwise equal"
    elif passed:
        reason = f"within tolerance (output error {out_error:.3g}, update error {update_error:.3g})"
    elif not outputs_ok:
        reason = f"output differs by {out_error:.3g}"
    else:
        reason = f"the update differs from the re-executed one by {update_error:.3g} (relative)"
    return CheckResult(passed, reason, evidence, bitwise, error)


def _update_error(mine: dict[str, Any], claimed: dict[str, Any], decayed: dict[str, Any]) -> float:
    """||u_mine - u_claimed|| / ||u_mine|| over all weights, u = after - decayed (module docstring);
    a step that changed nothing on our side but something on the prover's is infinitely off."""
    import torch

    diff = total = 0.0
    for name, ours in mine.items():
        base = torch.as_tensor(decayed[name]).detach().to(torch.float32).cpu()
        u_mine, u_claimed = ours - base, claimed[name] - base
        diff += float((u_mine - u_claimed).double().pow(2).sum())
        total += float(u_mine.double().pow(2).sum())
    if total == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return math.sqrt(diff / total)


def challenge_record(key: PrivateKey, config: EconomicsConfig, proof_id: str, result: CheckResult,
                     seq: int, timestamp_ms: int) -> Record:
    """The checker's signed verdict with its evidence; either verdict locks a bond until
    settlement, lost by the side the other verifiers outvote."""
    e = result.evidence
    body = {"proof_id": proof_id, "verdict": "pass" if result.passed else "fail", "step": e.step,
            "leaf": e.leaf.hex(), "output_hash": e.output_hash.hex(), "error_ppm": e.error_ppm}
    return Record.create(key, "challenge", config.network_id, timestamp_ms, body, seq=seq)
