"""The typed stage protocol on the wire, and its translation to and from training's calls.

Training speaks ``(op, meta, tensors)`` to its transport (training/transport.py); peers speak the
versioned messages of neuroshard.proto (ForwardRequest ... WeightsReply). This module is the one
place that maps one to the other, in both directions, and the receiver's checks live here too:

- a request of another stage-protocol version is refused FAILED_PRECONDITION naming both;
- every number is range-checked and refused INVALID_ARGUMENT with the field and its bounds;
- the driver of a stage call is the verified caller, passed in by the p2p layer, never a field.
"""

from __future__ import annotations

import math
from typing import Any

from app.node.p2p.protocol import STAGE_PROTOCOL_VERSION, pb2
from app.node.training.arch_guard import ARCH_KEY
from app.node.training.stage import GRAD_MBS, GRAD_NORM, GRAD_SQ, VOCAB_KEY
from app.node.training.transport import OP_BACKWARD, OP_COMMIT, OP_FINISH, OP_FORWARD, GiveUp, Meta

MAX_LAYER = 1 << 16
MAX_STEP = 1 << 40
"""2^40 steps: 35,000 years at one step a second; anything above is a lie or an overflow."""
MAX_MICROBATCHES = 4096
MAX_ROUND = 1 << 32
MAX_BATCHES = 1 << 32
"""Hard bound of a claimed batch count; the cohort bounds it further by the round's length."""
MAX_TOKENS = 1 << 48
MAX_AGE_S = 1e9
MAX_VOCAB_TAG = 128
MAX_ARCH_TAG = 128

_STATUS_NAMES = {"ok": pb2.STAGE_OK, "need_input": pb2.STAGE_NEED_INPUT, "missing": pb2.STAGE_MISSING,
                 "already": pb2.STAGE_ALREADY, "vocab_mismatch": pb2.STAGE_VOCAB_MISMATCH, "stale": pb2.STAGE_STALE,
                 "arch_mismatch": pb2.STAGE_ARCH_MISMATCH}
_STATUS_OF = {v: k for k, v in _STATUS_NAMES.items()}
REQUEST_TYPES = {OP_FORWARD: pb2.ForwardRequest, OP_BACKWARD: pb2.BackwardRequest,
                 OP_COMMIT: pb2.CommitRequest, OP_FINISH: pb2.FinishRequest}


def invalid(reason: str) -> GiveUp:
    return GiveUp(reason, status="INVALID_ARGUMENT")


def bounded(name: str, value: int, hi: int, lo: int = 0) -> int:
    """``value`` if ``lo <= value <= hi``, else refused INVALID_ARGUMENT naming field and bounds."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise invalid(f"{name} = {str(value)[:24]} is out of range [{lo}, {hi}]")
    return value


def finite(name: str, value: float, hi: float = math.inf, lo: float = 0.0, *, nan_ok: bool = False) -> float:
    if math.isnan(value) and nan_ok:
        return value
    if not math.isfinite(value) or not lo <= value <= hi:
        raise invalid(f"{name} = {value!r} must be a finite number in [{lo:g}, {hi:g}]")
    return value


def check_version(request: Any) -> None:
    if request.stage_version != STAGE_PROTOCOL_VERSION:
        raise GiveUp(f"stage protocol version {request.stage_version} is not supported: this node speaks "
                     f"version {STAGE_PROTOCOL_VERSION}; one of the two must update NeuroShard",
                     status="FAILED_PRECONDITION")


def _vocab(tag: str) -> str:
    if len(tag) > MAX_VOCAB_TAG:
        raise invalid(f"vocabulary tag of {len(tag)} characters, limit {MAX_VOCAB_TAG}")
    return tag


def _arch(tag: str) -> str:
    if len(tag) > MAX_ARCH_TAG:
        raise invalid(f"architecture tag of {len(tag)} characters, limit {MAX_ARCH_TAG}")
    return tag


# --- client side: training's call -> request; reply -> training's meta ----------------------------
def stage_request(op: str, layer: int, meta: Meta) -> Any:
    """The typed request for one of training's stage operations (its ``driver`` is not sent: the
    signature says who drives)."""
    common: dict[str, Any] = {"stage_version": STAGE_PROTOCOL_VERSION, "layer": layer,
                              "arch": str(meta.get(ARCH_KEY, ""))}
    if op == OP_FINISH:
        return pb2.FinishRequest(**common)
    vocab = str(meta.get(VOCAB_KEY, ""))
    if op in (OP_FORWARD, OP_BACKWARD):
        return REQUEST_TYPES[op](**common, step=int(meta["step"]), microbatch=int(meta["mb"]), vocab=vocab)
    if op == OP_COMMIT:
        request = pb2.CommitRequest(**common, step=int(meta["step"]), microbatches=int(meta["microbatches"]),
                                    loss=float(meta.get("loss", math.nan)), tokens=int(meta.get("tokens", 0) or 0),
                                    vocab=vocab)
        if meta.get(GRAD_NORM) is not None:
            request.grad_norm = float(meta[GRAD_NORM])
        return request
    raise ValueError(f"unknown stage operation {op!r}")


def reply_meta(reply: Any) -> Meta:
    """Training's view of a typed reply (a peer's answer: its numbers are checked too)."""
    out: Meta = {}
    status = _STATUS_OF.get(reply.status)
    if status is None:
        raise invalid(f"stage reply without a known status ({reply.status})")
    out["status"] = status
    fields = reply.DESCRIPTOR.fields_by_name
    if "loss" in fields and reply.HasField("loss"):
        out["loss"] = finite("loss", reply.loss, nan_ok=True)
    if "tokens" in fields and reply.HasField("tokens"):
        out["tokens"] = bounded("tokens", reply.tokens, MAX_TOKENS)
    if "grad_sq" in fields and reply.HasField("grad_sq"):
        out[GRAD_SQ] = finite("grad_sq", reply.grad_sq)
    if "grad_mbs" in fields and reply.HasField("grad_mbs"):
        out[GRAD_MBS] = bounded("grad_mbs", reply.grad_mbs, MAX_MICROBATCHES)
    if "inner_step" in fields:
        out["inner_step"] = reply.inner_step
    if "missing" in fields and status == "missing":
        out["missing"] = [bounded("missing", m, MAX_MICROBATCHES) for m in reply.missing[:MAX_MICROBATCHES]]
    if "vocab" in fields and reply.vocab:
        out[VOCAB_KEY] = _vocab(reply.vocab)
    if "arch" in fields and reply.arch:
        out[ARCH_KEY] = _arch(reply.arch)
    if "reason" in fields and reply.reason:
        out["error"] = reply.reason[:400]
    return out


# --- server side: request -> training's call; training's answer -> reply --------------------------
def stage_call(kind: str, request: Any, caller: bytes) -> tuple[str, int, Meta]:
    """(op, stage layer, meta for StageWorker.handle) of a typed request from ``caller``."""
    expected = REQUEST_TYPES.get(kind)
    if expected is None or not isinstance(request, expected):
        raise invalid(f"a {kind} call takes a typed {expected.DESCRIPTOR.name if expected else 'stage'} message")
    check_version(request)
    layer = bounded("layer", request.layer, MAX_LAYER)
    meta: Meta = {"driver": caller.hex(), "step": 0}
    if request.arch:
        meta[ARCH_KEY] = _arch(request.arch)
    if kind == OP_FINISH:
        return kind, layer, meta
    meta["step"] = bounded("step", request.step, MAX_STEP)
    if request.vocab:
        meta[VOCAB_KEY] = _vocab(request.vocab)
    if kind in (OP_FORWARD, OP_BACKWARD):
        meta["mb"] = bounded("microbatch", request.microbatch, MAX_MICROBATCHES - 1)
        return kind, layer, meta
    meta["microbatches"] = bounded("microbatches", request.microbatches, MAX_MICROBATCHES, lo=1)
    meta["loss"] = finite("loss", request.loss, nan_ok=True)
    meta["tokens"] = bounded("tokens", request.tokens, MAX_TOKENS)
    if request.HasField("grad_norm"):
        meta[GRAD_NORM] = finite("grad_norm", request.grad_norm)
    return kind, layer, meta


def stage_reply(op: str, out: Meta) -> Any:
    """The typed reply for what StageWorker.handle answered."""
    status = _STATUS_NAMES.get(str(out.get("status", "ok")), pb2.STAGE_OK)
    vocab, reason = str(out.get(VOCAB_KEY, "")), str(out.get("error", ""))[:400]
    arch = str(out.get(ARCH_KEY, ""))
    if op == OP_FINISH:
        return pb2.FinishReply(status=status, arch=arch, reason=reason)
    if op == OP_COMMIT:
        return pb2.CommitReply(status=status, inner_step=int(out.get("inner_step", 0)),
                               missing=[int(m) for m in out.get("missing", [])], vocab=vocab, reason=reason,
                               arch=arch)
    reply = (pb2.ForwardReply if op == OP_FORWARD else pb2.BackwardReply)(status=status, vocab=vocab, reason=reason,
                                                                          arch=arch)
    if GRAD_SQ in out:
        reply.grad_sq = float(out[GRAD_SQ])
    if GRAD_MBS in out:
        reply.grad_mbs = int(out[GRAD_MBS])
    if op == OP_FORWARD:
        if "loss" in out:
            reply.loss = float(out["loss"])
        if "tokens" in out:
            reply.tokens = int(out["tokens"])
    return reply


# --- DiLoCo exchange and weight transfer ---------------------------------------------------------
def sync_request(layer_range: tuple[int, int], round_: int, batches: int, age_s: float,
                 *, is_async: bool = False, arch: str = "") -> Any:
    return pb2.SyncRequest(stage_version=STAGE_PROTOCOL_VERSION, layer_start=layer_range[0],
                           layer_end=layer_range[1], round=round_, batches=batches, age_s=age_s,
                           arch=arch, **{"async": is_async})


def request_arch(request: Any) -> str:
    """The architecture tag a SyncRequest or WeightsRequest names ("" when none), length-checked."""
    return _arch(str(getattr(request, "arch", "")))


def parse_sync(request: Any) -> tuple[tuple[int, int], int, int, float, bool]:
    """(layer range, round, batches, age, async) of a typed SyncRequest, every number checked."""
    if not isinstance(request, pb2.SyncRequest):
        raise invalid("an exchange takes a typed SyncRequest message")
    check_version(request)
    layer_range = (bounded("layer_start", request.layer_start, MAX_LAYER),
                   bounded("layer_end", request.layer_end, MAX_LAYER, lo=request.layer_start + 1))
    return (layer_range, bounded("round", request.round, MAX_ROUND), bounded("batches", request.batches, MAX_BATCHES),
            finite("age_s", request.age_s, MAX_AGE_S), bool(getattr(request, "async")))


def sync_reply(status: str, round_: int, inner: int, *, training: bool = False) -> Any:
    """``training``: our driver still has steps of its own, so our payload for ``round_`` will come."""
    return pb2.SyncReply(status=_STATUS_NAMES[status], round=round_, inner=inner, training=training)


def weights_request(layer_range: tuple[int, int], *, diloco: bool = False, arch: str = "") -> Any:
    return pb2.WeightsRequest(stage_version=STAGE_PROTOCOL_VERSION, layer_start=layer_range[0],
                              layer_end=layer_range[1], diloco=diloco, arch=arch)


def parse_weights(request: Any) -> Meta:
    """Training's meta (``range``, ``diloco``, ``arch``) of a typed WeightsRequest, checked."""
    if not isinstance(request, pb2.WeightsRequest):
        raise invalid("a weights download takes a typed WeightsRequest message")
    check_version(request)
    start = bounded("layer_start", request.layer_start, MAX_LAYER)
    end = bounded("layer_end", request.layer_end, MAX_LAYER, lo=start + 1)
    return {"range": [start, end], "diloco": bool(request.diloco), ARCH_KEY: request_arch(request)}
