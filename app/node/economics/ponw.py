"""Proof of Neural Work: building proofs and the checks that need no ledger state.

A proof claims the work one node did in one epoch (seed 002): node id (the record's author),
epoch, a random nonce, the kind of work, the work figures and, for training, the hash of the
node's layer weights before and after. The ledger (``state.py``) adds the stateful rules: one
proof per node, kind and epoch; a nonce used once; at most ``max_proofs_per_hour``; rewards only
once the challenge window has passed without an upheld challenge (optimistic verification).

Rate limits derive from the node's speed tier (seed 001, DESIGN.md section 4): a tier is defined
by milliseconds per reference layer per batch, so a node of tier T holding L layers cannot have
pushed more than ``epoch_ms / (tier_min_ms[T] * L)`` batches through them in one epoch. A claim
above that bound is refused as physically impossible for the tier the node measured.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from app.crypto.keys import PrivateKey
from app.node.economics.constants import PROOF_KINDS, EconomicsConfig
from app.node.economics.records import Record

MAX_TOKENS_PER_BATCH = 65_536
"""Largest micro-batch a proof may claim (e.g. 32 x 2048 tokens); more is refused."""
MAX_SAMPLES_PER_SECOND = 5_000
"""Data serving and spot-checks: 5k samples/s is above what a volunteer's uplink serves."""
INFERENCE_TOKENS_PER_LAYER_STEP = 256
"""Decode throughput bound: at most 256 tokens per reference-layer time (batched decoding)."""


class ProofRejected(ValueError):
    """A proof that breaks a PoNW rule; ``reason`` is what a peer log or the UI shows."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"proof rejected: {reason}")
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class WorkFigures:
    """What the node measured during the epoch (filled by the training/data/inference loops)."""

    batches: int = 0
    tokens: int = 0
    samples: int = 0
    layers: int = 0
    role: str = "none"
    tier: int = 4
    uptime_ms: int = 0
    async_mode: bool = False


def make_proof(key: PrivateKey, config: EconomicsConfig, *, epoch: int, kind: str, work: WorkFigures,
               timestamp_ms: int, model_before: bytes = b"", model_after: bytes = b"") -> Record:
    """Signs a proof record for ``epoch``; ``model_*`` are 32-byte weight hashes (training only)."""
    if kind not in PROOF_KINDS:
        raise ValueError(f"unknown proof kind {kind!r}; expected one of {PROOF_KINDS}")
    body = {"epoch": epoch, "nonce": secrets.token_hex(16), "proof_kind": kind,
            "batches": work.batches, "tokens": work.tokens, "samples": work.samples,
            "layers": work.layers, "role": work.role, "tier": work.tier, "uptime_ms": work.uptime_ms,
            "async_mode": work.async_mode, "model_before": model_before.hex(),
            "model_after": model_after.hex()}
    return Record.create(key, "proof", config.network_id, timestamp_ms, body)


def max_batches(tier: int, layers: int, config: EconomicsConfig) -> int:
    """Most batches a node of ``tier`` holding ``layers`` layers can process in one epoch."""
    per_batch_ms = config.tier_min_ms[tier] * max(layers, 1)
    return int(config.epoch_ms / per_batch_ms)


def check_timing(record: Record, config: EconomicsConfig, now_ms: int | None) -> None:
    """Refuses future epochs, proofs stamped outside their epoch's window, and late arrivals.

    ``now_ms`` is the local clock at the door (gossip); ``None`` when replaying stored records,
    where only the record's own timestamps are compared (deterministic on every node).

    Late arrivals: a proof's timestamp is chosen by its author, so a proof for an old epoch could
    be stamped inside its window and published after the window closed, when no verifier can
    challenge it any more. The door therefore refuses a proof that reaches this node after its
    window closed (plus the clock-skew allowance). This is the one rule that reads the local
    clock: a proof that reaches some nodes in time and others only after a partition longer than
    the window would be held by the first group only, a divergence accepted as the price of not
    paying for work nobody could check.
    """
    epoch = record.body["epoch"]
    start = epoch * config.epoch_ms
    closes = start + config.epoch_ms + config.challenge_window_ms
    if now_ms is not None and start > now_ms + config.max_clock_skew_ms:
        raise ProofRejected(f"epoch {epoch} is in the future")
    if now_ms is not None and now_ms > closes + config.max_clock_skew_ms:
        raise ProofRejected("proof arrived after its challenge window closed; it can no longer be checked")
    if record.timestamp_ms < start:
        raise ProofRejected("proof stamped before its epoch began")
    if record.timestamp_ms >= closes:
        raise ProofRejected("proof stamped after its epoch's challenge window closed")


def check_work(body: dict, config: EconomicsConfig) -> None:
    """Refuses impossible figures for the claimed tier and training proofs whose weights did not move."""
    kind = body["proof_kind"]
    epoch_s = config.epoch_ms / 1000
    if body["uptime_ms"] > config.epoch_ms:
        raise ProofRejected("uptime longer than the epoch")
    if kind == "uptime" and body["uptime_ms"] == 0:
        raise ProofRejected("uptime proof with zero uptime")
    if body["samples"] > MAX_SAMPLES_PER_SECOND * epoch_s:
        raise ProofRejected("more samples than any node serves in one epoch")
    if kind == "training":
        _check_training(body, config)
    elif kind == "inference":
        bound = max_batches(body["tier"], body["layers"], config) * INFERENCE_TOKENS_PER_LAYER_STEP
        if body["tokens"] > bound:
            raise ProofRejected(f"{body['tokens']} tokens exceed tier T{body['tier']}'s bound of {bound}")
    elif body["batches"] or body["tokens"]:
        raise ProofRejected(f"a {kind} proof claims training batches or tokens")


def _check_training(body: dict, config: EconomicsConfig) -> None:
    if body["batches"] <= 0 or body["layers"] <= 0:
        raise ProofRejected("training proof without batches or layers")
    bound = max_batches(body["tier"], body["layers"], config)
    if body["batches"] > bound:
        raise ProofRejected(
            f"{body['batches']} batches over {body['layers']} layers is impossible for tier "
            f"T{body['tier']} (at most {bound} per epoch)")
    if body["tokens"] > body["batches"] * MAX_TOKENS_PER_BATCH:
        raise ProofRejected("more tokens than the claimed batches can hold")
    if not body["model_before"] or not body["model_after"]:
        raise ProofRejected("training proof without model hashes")
    if body["model_before"] == body["model_after"]:
        raise ProofRejected("model hash did not change: no training step was applied")


def check_proof(record: Record, config: EconomicsConfig, now_ms: int | None = None) -> None:
    """All stateless PoNW rules; raises ``ProofRejected`` with the first rule broken."""
    check_timing(record, config, now_ms)
    check_work(dict(record.body), config)
