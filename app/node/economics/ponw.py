"""Proof of Neural Work: building proofs and the checks that need no ledger state.

A proof claims the work one node did in one epoch (seed 002): node id (the record's author),
epoch, a random nonce, the kind of work, the work figures and, for training, the hash of the
node's layer weights before and after. The ledger (``state.py``) adds the stateful rules: one
proof per node, kind and epoch; a nonce used once; at most ``max_proofs_per_hour``; rewards only
once the challenge window has passed without an upheld challenge (optimistic verification).

Bounds come from the real cost of the claimed work, never from a tier table (DESIGN.md section
7; the tier is a scheduling hint only, measured once and often under other load). A training or
inference proof carries the wall-clock span its work was done in (``work_start_ms`` ..
``work_end_ms``, ending inside its epoch) and ``layer_us``, the node's measured time for one
layer of the actual model shape on one micro-batch (its fastest step in that span). The rules:

* the claimed work fits the span at that cost: ``batches * layers * layer_us`` is at most
  ``work_time_margin`` x the span;
* the cost is physically possible (``layer_us >= min_layer_us``), whatever the node's tier;
* a node claims each moment once: the ledger refuses a span that overlaps one of the same node's
  accepted spans (``handlers.py``), so the wall time a node claims is at most the time it exists.

A data proof claims the samples it served in its epoch; it is paid for at most the samples its
receivers signed for in ``receipt`` records of that epoch applied before it, and a receipt counts
only from a node with a recent accepted training proof (``handlers._receipt``), so a server
cannot pay itself through made-up receivers without doing verified training work for each.
An async proof claims the batches and layers of the node's pseudo-gradients that stage holders
merged into an outer step in its epoch, at most what those holders signed for in
``async_receipt`` records (the same guards as receipts), so only contributions actually merged are paid.

What the node claims it computed is then checked by re-execution (verify mode): the proof's
``work_root`` commits to the steps it did, and a verifier re-runs a sampled one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from app.crypto.keys import PrivateKey
from app.node.economics import legacy
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
    work_start_ms: int = 0
    work_end_ms: int = 0
    layer_us: int = 0
    work_root: bytes = b""


def make_proof(key: PrivateKey, config: EconomicsConfig, *, epoch: int, kind: str, work: WorkFigures,
               timestamp_ms: int, model_before: bytes = b"", model_after: bytes = b"") -> Record:
    """Signs a proof record for ``epoch``; ``model_*`` are 32-byte weight hashes (training only)."""
    if kind not in PROOF_KINDS:
        raise ValueError(f"unknown proof kind {kind!r}; expected one of {PROOF_KINDS}")
    body = {"epoch": epoch, "nonce": secrets.token_hex(16), "proof_kind": kind,
            "batches": work.batches, "tokens": work.tokens, "samples": work.samples,
            "layers": work.layers, "role": work.role, "tier": work.tier, "uptime_ms": work.uptime_ms,
            "async_mode": work.async_mode, "model_before": model_before.hex(),
            "model_after": model_after.hex(), "work_start_ms": work.work_start_ms,
            "work_end_ms": work.work_end_ms, "layer_us": work.layer_us, "work_root": work.work_root.hex()}
    return Record.create(key, "proof", config.network_id, timestamp_ms, body)


def make_receipt(key: PrivateKey, config: EconomicsConfig, *, server: str, epoch: int, samples: int,
                 timestamp_ms: int) -> Record:
    """The receiver's signed count of the samples ``server`` sent it in ``epoch`` (stamped inside
    that epoch): a data proof is paid for at most what its receivers signed (``handlers._receipt``)."""
    return Record.create(key, "receipt", config.network_id, timestamp_ms,
                         {"server": server, "epoch": epoch, "samples": samples})


def make_async_receipt(key: PrivateKey, config: EconomicsConfig, *, contributor: str, epoch: int, first_layer: int,
               layers: int, batches: int, timestamp_ms: int) -> Record:
    """A stage holder's signed word that it merged ``contributor``'s async pseudo-gradient
    (``batches`` of snapshot training on its ``layers`` from ``first_layer``) into an outer step
    in ``epoch`` (stamped inside it): an async proof is paid for at most what holders signed
    (``handlers._async_receipt``)."""
    return Record.create(key, "async_receipt", config.network_id, timestamp_ms,
                         {"contributor": contributor, "epoch": epoch, "first_layer": first_layer,
                          "layers": layers, "batches": batches})


def max_layer_batches(body: dict, config: EconomicsConfig) -> int:
    """Most layer x micro-batch passes the proof's span allows at its measured cost per layer."""
    span_us = (body["work_end_ms"] - body["work_start_ms"]) * 1000
    return int(span_us * config.work_time_margin) // max(body["layer_us"], 1)


def check_span(body: dict, config: EconomicsConfig, timestamp_ms: int) -> None:
    """The work span ends inside the proof's epoch, before its stamp, and reaches back a bounded
    time; the measured cost per layer is physically possible."""
    start = body["epoch"] * config.epoch_ms
    if not start <= body["work_end_ms"] < start + config.epoch_ms:
        raise ProofRejected("work span does not end inside the proof's epoch")
    if body["work_end_ms"] > timestamp_ms:
        raise ProofRejected("work span ends after the proof was signed")
    if body["work_start_ms"] >= body["work_end_ms"]:
        raise ProofRejected("work span is empty")
    if body["work_start_ms"] < start - config.max_work_span_epochs * config.epoch_ms:
        raise ProofRejected(f"work span starts more than {config.max_work_span_epochs} epochs before its epoch")
    if body["layer_us"] < config.min_layer_us:
        raise ProofRejected(
            f"{body['layer_us']} us per layer and micro-batch is faster than any hardware "
            f"(at least {config.min_layer_us} us)")


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


def check_work(body: dict, config: EconomicsConfig, timestamp_ms: int) -> None:
    """Refuses work that does not fit its span at its measured cost, and training proofs whose
    weights did not move."""
    kind = body["proof_kind"]
    _check_uptime_and_samples(body, config)
    if kind == "training":
        _check_training(body, config, timestamp_ms)
    elif kind == "inference":
        check_span(body, config, timestamp_ms)
        bound = max_layer_batches(body, config) // max(body["layers"], 1) * INFERENCE_TOKENS_PER_LAYER_STEP
        if body["tokens"] > bound:
            raise ProofRejected(f"{body['tokens']} tokens exceed the {bound} its span allows at its measured cost")
    elif kind == "async":
        if body["batches"] <= 0 or body["layers"] <= 0:
            raise ProofRejected("async proof without batches or layers")
        if body["tokens"]:
            raise ProofRejected("an async proof claims tokens")
    elif body["batches"] or body["tokens"]:
        raise ProofRejected(f"a {kind} proof claims training batches or tokens")


def _check_training(body: dict, config: EconomicsConfig, timestamp_ms: int) -> None:
    if body["batches"] <= 0 or body["layers"] <= 0:
        raise ProofRejected("training proof without batches or layers")
    check_span(body, config, timestamp_ms)
    bound = max_layer_batches(body, config)
    if body["batches"] * body["layers"] > bound:
        span_ms = body["work_end_ms"] - body["work_start_ms"]
        raise ProofRejected(
            f"{body['batches']} batches over {body['layers']} layers at {body['layer_us']} us each do "
            f"not fit in {span_ms} ms of work (at most {bound} layer passes)")
    _check_training_claim(body)


def _check_training_claim(body: dict) -> None:
    """What every training proof must hold, whatever rules bound its work (both record versions)."""
    if body["tokens"] > body["batches"] * MAX_TOKENS_PER_BATCH:
        raise ProofRejected("more tokens than the claimed batches can hold")
    if not body["model_before"] or not body["model_after"]:
        raise ProofRejected("training proof without model hashes")
    if body["model_before"] == body["model_after"]:
        raise ProofRejected("model hash did not change: no training step was applied")


def _check_uptime_and_samples(body: dict, config: EconomicsConfig) -> None:
    """The checks every proof rule shares: uptime fits the epoch (and an uptime proof has some),
    samples are what one node can serve in an epoch."""
    if body["uptime_ms"] > config.epoch_ms:
        raise ProofRejected("uptime longer than the epoch")
    if body["proof_kind"] == "uptime" and body["uptime_ms"] == 0:
        raise ProofRejected("uptime proof with zero uptime")
    if body["samples"] > MAX_SAMPLES_PER_SECOND * config.epoch_ms / 1000:
        raise ProofRejected("more samples than any node serves in one epoch")


def check_v1_work(body: dict, config: EconomicsConfig) -> None:
    """The previous release's stateless rules for a version-1 proof (``legacy.py``): the same
    checks as ``check_work`` except that training and inference are bounded by the seed-001
    tier table, since a version-1 proof carries no span or measured cost."""
    kind = body["proof_kind"]
    _check_uptime_and_samples(body, config)
    bound = legacy.max_batches(body["tier"], body["layers"], config)
    if kind == "training":
        if body["batches"] <= 0 or body["layers"] <= 0:
            raise ProofRejected("training proof without batches or layers")
        if body["batches"] > bound:
            raise ProofRejected(
                f"{body['batches']} batches over {body['layers']} layers is impossible for tier "
                f"T{body['tier']} (at most {bound} per epoch)")
        _check_training_claim(body)
    elif kind == "inference":
        if body["tokens"] > bound * INFERENCE_TOKENS_PER_LAYER_STEP:
            raise ProofRejected(f"{body['tokens']} tokens exceed tier T{body['tier']}'s bound of "
                                f"{bound * INFERENCE_TOKENS_PER_LAYER_STEP}")
    elif body["batches"] or body["tokens"]:
        raise ProofRejected(f"a {kind} proof claims training batches or tokens")


def check_proof(record: Record, config: EconomicsConfig, now_ms: int | None = None) -> None:
    """All stateless PoNW rules; raises ``ProofRejected`` with the first rule broken. A version-1
    proof is judged by the rules it was made under (``legacy.py``)."""
    check_timing(record, config, now_ms)
    if legacy.is_v1(record):
        check_v1_work(dict(record.body), config)
    else:
        check_work(dict(record.body), config, record.timestamp_ms)
