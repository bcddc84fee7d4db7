"""Verify mode, both sides: the prover keeps what its proofs commit to, the verifier re-runs it.

**Prover (``StepLog``, every training node).** The stage calls three hooks, lock held: after each
forward (``on_forward``), after each backward that adds a micro-batch's gradients (``on_backward``)
and right after the optimizer step (``on_applied``). At a step's first forward the log keeps a CPU
copy of the weights and the inner AdamW moments as they were; it adds each micro-batch's inputs,
output and output gradient, the order their gradients were added in; at the commit, the weights
after, the inner step and the driver's gradient norm. A step is claimable only when all of it was
seen here and the weights did not change between its first forward and its commit (another
driver's commit, a DiLoCo outer step, a weight download: the committed step would not re-run to
the same result). When the economy credits the step (``seal``), the sample joins that epoch's
list; the epoch's training proof commits to the leaves (``work_root``), and the log serves any of
them, by proof id and step, until the proof's challenge window closes.

**Verifier (``Verifier``, a node with mode "verify" and stake).** Each round it reads only what
reached its ledger since the last round (``Ledger.verification_work_since``): new training proofs
of others and new fail verdicts. It keeps the proofs whose window is open and that it has not
judged, and drops each once judged or closed; the work per round is the new records plus the
pending set, never the whole ledger. For a proof it asks the prover for the committed leaves,
draws each step with probability ``spot_check_rate`` (at most ``spot_check_steps``) with a salt only
it knows, fetches the drawn steps and re-executes each (``step_runner``: forward, backward and
optimizer step through a StageWorker of its own code and training configuration). A fail is
signed into the ledger at once. A pass from its own draw is held back until late in the window
(``HOLD_PASS_EPOCHS`` before it closes): if someone fails the proof meanwhile, the verifier
referees exactly the failed step instead, so its one verdict on the proof can confirm or refute
that fail (verdicts on different steps never add up). A proof someone failed is always
re-checked on the failed step (refereeing: one honest verifier answers a griefer).

Memory: the log keeps, per step of the open window, the weights before and after, the two AdamW
moments and the micro-batches, at most ``max_bytes_kept`` (1 GiB) in all: about 4 MiB a step for the
devnet's tiny model. A step that would pass the budget is not recorded (nothing is copied: the
check comes before the first copy) and the economy does not claim it (``seal`` returns None):
unchecked work is not paid. A large stage therefore claims few steps per window: 11 x 512 layers
(~134 MB of weights, ~540 MB a step) claim one per window until samples get smaller (one
layer instead of the stage, or weights after shared with the next step's weights before).

Transport: the verifier calls the stage protocol's ``VerifyStep`` method (p2p/neuroshard.proto);
samples travel as one safetensors blob (never a pickle) with a JSON header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from app.node.economics import spotcheck
from app.node.economics.constants import EconomicsConfig
from app.node.economics.ledger import Ledger
from app.node.economics.records import Record
from app.node.model.architecture import ModelArchitecture
from app.node.model.shard import ModelShard
from app.node.training.config import TrainingConfig
from app.node.training.inner_optim import lr_at
from app.node.training.speed import plan_speed
from app.node.training.stage import GRAD_NORM, StageWorker
from app.node.training.stage_weights import state_hash
from app.node.training.transport import OP_BACKWARD, OP_COMMIT, OP_FORWARD

log = logging.getLogger("neuroshard.verification")
MAX_SAMPLE_BYTES = 64 * 2**20
"""A served sample larger than this is refused unread (the tiny model's is ~4 MiB)."""
MAX_MICROBATCHES = 1024
LEAVES_ONLY = -1
"""The step a verifier asks for to learn how many steps a proof committed (the leaves only)."""
HOLD_PASS_EPOCHS = 2
"""A pass from the verifier's own draw is signed this many epochs before the window closes."""
GRAD_NORM_SPAN = 1e3
"""A claimed whole-model gradient norm is accepted between this stage's own norm (a part of the
whole can be no larger) and GRAD_NORM_SPAN times it. Without an upper bound, a huge claimed norm
would clip every gradient to nothing and the optimizer step to the weight decay alone, which a
prover can write down without a backward."""


@dataclass
class _Open:
    """A step being recorded (from its first forward to its commit)."""

    weights: dict[str, torch.Tensor]
    moments: dict[str, torch.Tensor]
    layer_range: tuple[int, int]
    with_embedding: bool
    with_head: bool
    bf16: bool
    forwards: dict[int, tuple[tuple[torch.Tensor, ...], torch.Tensor]] = field(default_factory=dict)
    grads: dict[int, torch.Tensor] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)


@dataclass
class _Pending:
    """One committed step: its tensors (spotcheck's prefixes) and scalars."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    own_bytes: int  # 0 for a lazy node's phantom, which shares its real step's tensors
    _leaf: bytes = b""

    @property
    def nbytes(self) -> int:
        return self.own_bytes

    def leaf(self) -> bytes:
        if not self._leaf:
            self._leaf = spotcheck.step_leaf(self.tensors, self.meta)
        return self._leaf


@dataclass
class _Published:
    epoch: int
    leaves: tuple[bytes, ...]
    samples: list[_Pending]


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True)


class StepLog:
    """The prover's record of its committed steps (see the module docstring)."""

    def __init__(self, config: EconomicsConfig, *, max_bytes_kept: int = 2**30, phantom_steps: int = 0) -> None:
        """``phantom_steps`` > 0 makes a *lazy* node (devnet fault injection only): for every
        step it ran it also claims that many steps whose backward and update it skipped (the
        outputs are real, the weights after are the weights before)."""
        self.config = config
        self.max_bytes_kept = max_bytes_kept
        self.phantom_steps = phantom_steps
        self._lock = threading.Lock()
        self._open: OrderedDict[tuple[str, int], _Open] = OrderedDict()
        self._ready: OrderedDict[tuple[str, int], _Pending | None] = OrderedDict()
        self._published: dict[str, _Published] = {}
        self._kept = 0
        self._wired = False  # a stage feeds this log: from then on every claimed step needs a sample

    # --- the stage's hooks (lock held) -----------------------------------------------------------
    def on_forward(self, stage: Any, driver: str, step: int, mb: int, inputs: list[torch.Tensor],
                   output: torch.Tensor) -> None:
        self._wired = True
        with self._lock:
            record = self._open.get((driver, step))
        if record is None:
            shard = stage.shard
            if self._kept + self._in_flight() + _step_bytes(stage) > self.max_bytes_kept:
                return  # no room for this step's copies: it will not be claimed, so copy nothing
            record = _Open(weights={k: _cpu(v) for k, v in shard.state_dict().items()},
                           moments=_moments(stage), layer_range=tuple(stage.layer_range),
                           with_embedding=stage.is_first, with_head=stage.is_last,
                           bf16=bool(getattr(getattr(stage, "speed", None), "autocast_bf16", False)))
            with self._lock:
                self._open[(driver, step)] = record
                while len(self._open) > 8:  # steps that never committed
                    self._open.popitem(last=False)
        if mb in record.forwards:
            return  # a replayed micro-batch: its gradients were added once
        record.forwards[mb] = (tuple(_cpu(t) for t in inputs), output.detach().to("cpu", torch.float32, copy=True))
        if record.with_head:
            record.order.append(mb)  # the head adds each micro-batch's gradients in its forward

    def _in_flight(self) -> int:
        """Bytes held for steps not yet credited: open ones (with the weights after still to come)
        and applied ones waiting for ``seal``."""
        with self._lock:
            opened = sum(_nbytes(r.weights) * 2 + _nbytes(r.moments) for r in self._open.values())
            return opened + sum(p.nbytes for p in self._ready.values() if p is not None)

    def on_backward(self, stage: Any, driver: str, step: int, mb: int, grad_out: torch.Tensor) -> None:
        with self._lock:
            record = self._open.get((driver, step))
        if record is not None and mb not in record.grads:
            record.grads[mb] = _cpu(grad_out)
            record.order.append(mb)

    def on_applied(self, stage: Any, info: Any) -> None:
        """The step's optimizer update ran: complete its record, or mark it unclaimable."""
        with self._lock:
            record = self._open.pop((info.driver, info.step), None)
        pending = None
        if record is not None and self._complete(record, info):
            pending = self._pending(record, stage, info)
        with self._lock:
            self._ready[(info.driver, info.step)] = pending
            while len(self._ready) > 8:  # applied steps nobody credited (no economy behind the stage)
                self._ready.popitem(last=False)

    def _complete(self, record: _Open, info: Any) -> bool:
        mbs = set(range(info.microbatches))
        if set(record.forwards) != mbs or len(record.order) != len(mbs) or set(record.order) != mbs:
            return False  # part of the step ran elsewhere (a take-over) or was replayed out of here
        if not record.with_head and set(record.grads) != mbs:
            return False
        return state_hash(record.weights) == info.hash_before  # nothing changed the weights mid-step

    def _pending(self, record: _Open, stage: Any, info: Any) -> _Pending:
        tensors = {spotcheck.WEIGHTS + k: v for k, v in record.weights.items()}
        tensors.update(record.moments)
        for mb, (inputs, output) in record.forwards.items():
            tensors.update({f"{spotcheck.INPUT}{mb}.{i}": t for i, t in enumerate(inputs)})
            tensors[f"{spotcheck.OUTPUT}{mb}"] = output
        tensors.update({f"{spotcheck.GRAD}{mb}": g for mb, g in record.grads.items()})
        tensors.update({spotcheck.AFTER + k: _cpu(v) for k, v in stage.shard.state_dict().items()})
        meta = {"layer_range": list(record.layer_range), "with_embedding": record.with_embedding,
                "with_head": record.with_head, "bf16": record.bf16, "microbatches": info.microbatches,
                "order": list(record.order), "inner_step": info.inner_step - 1,
                "grad_norm": None if info.grad_norm is None else float(info.grad_norm)}
        return _Pending(tensors, meta, sum(t.numel() * t.element_size() for t in tensors.values()))

    # --- the economy's side ---------------------------------------------------------------------
    def seal(self, driver: str, step: int) -> list[_Pending] | None:
        """The step is being credited: its sample (plus phantoms, for a lazy node) leaves the
        ready set. [] when no stage feeds this log (no hooks: nothing is ever committed); None
        when the step cannot be committed, so it must not be claimed: keeping it would pass the
        memory budget, or it was not whole here (see the module docstring), since a verifier
        would find the claim without its sample."""
        with self._lock:
            if (driver, step) in self._ready:
                sample = self._ready.pop((driver, step))
            else:
                # A worker's or validator's StepInfo counts steps locally, not in the driver's
                # numbering: its commit is the driver's newest step here (a driver commits a step
                # before it starts the next one).
                newest = [key for key in self._ready if key[0] == driver]
                sample = self._ready.pop(newest[-1]) if newest else None
        if sample is None:
            return None if self._wired else []
        if self._kept + sample.nbytes > self.max_bytes_kept:
            return None
        self._kept += sample.nbytes
        return [sample, *(_skipped_update(sample) for _ in range(self.phantom_steps))]

    def release(self, samples: list[_Pending]) -> None:
        """Samples sealed but never published (their epoch made no proof): free their budget."""
        with self._lock:
            self._kept -= sum(s.nbytes for s in samples)

    def publish(self, proof_id: str, epoch: int, samples: list[_Pending]) -> None:
        with self._lock:
            self._published[proof_id] = _Published(epoch, tuple(s.leaf() for s in samples), samples)

    def root(self, samples: list[_Pending]) -> bytes:
        return spotcheck.work_root([s.leaf() for s in samples]) if samples else b""

    def expire(self, current_epoch: int) -> None:
        """Drops what no verifier may ask for any more (window closed)."""
        window = self.config.challenge_window_ms // self.config.epoch_ms + 2
        with self._lock:
            for proof_id in [p for p, pub in self._published.items() if pub.epoch < current_epoch - window]:
                self._kept -= sum(s.nbytes for s in self._published.pop(proof_id).samples)

    def leaves(self, proof_id: str) -> tuple[bytes, ...] | None:
        with self._lock:
            published = self._published.get(proof_id)
        return None if published is None else published.leaves

    def sample(self, proof_id: str, step: int) -> tuple[tuple[bytes, ...], _Pending] | None:
        """The committed step ``step`` of ``proof_id`` with all the proof's leaves, if held."""
        with self._lock:
            published = self._published.get(proof_id)
        if published is None or not 0 <= step < len(published.samples):
            return None
        return published.leaves, published.samples[step]

    def serve(self, proof_id: str, step: int | None) -> tuple[bytes, bytes] | None:
        """Answers a verifier (the stage protocol's VerifyStep): (header, safetensors blob) of
        committed step ``step`` of ``proof_id``, or the header with the leaves alone (empty blob)
        when ``step`` is None; None if not held (never held, or its window closed)."""
        if step is None:
            leaves = self.leaves(proof_id)
            return None if leaves is None else (json.dumps({"v": 2, "leaves": [x.hex() for x in leaves]}).encode(), b"")
        held = self.sample(proof_id, step)
        return None if held is None else encode_sample(step, *held)


def encode_sample(step: int, leaves: tuple[bytes, ...], sample: _Pending) -> tuple[bytes, bytes]:
    """[JSON header, safetensors blob]: what ``parse_served`` reads."""
    header = {"v": 2, "step": step, "leaves": [x.hex() for x in leaves], "meta": sample.meta}
    seen: set[int] = set()
    tensors = {}
    for name, t in sample.tensors.items():  # safetensors refuses shared storage (tied weights, phantoms)
        t = t.contiguous()
        ptr = t.untyped_storage().data_ptr()
        tensors[name] = t.clone() if ptr in seen and t.numel() else t
        seen.add(ptr)
    return json.dumps(header).encode(), save_tensors(tensors)


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _step_bytes(stage: Any) -> int:
    """What recording a step of ``stage`` will hold, before copying anything: the weights before
    and after and the AdamW moments (the micro-batches are small beside them)."""
    weights = _nbytes(stage.shard.state_dict())
    optimizer = getattr(stage, "optimizer", None)
    moments = sum(_nbytes({k: v for k, v in st.items() if k != "step"}) for st in optimizer.state.values()) \
        if optimizer is not None else 0
    return 2 * weights + moments


def _moments(stage: Any) -> dict[str, torch.Tensor]:
    """The stage's AdamW moments by parameter name (none before its first step)."""
    optimizer = getattr(stage, "optimizer", None)
    if optimizer is None:
        return {}
    out = {}
    for name, p in stage.shard.named_parameters():
        st = optimizer.state.get(p)
        if st is not None:
            out[spotcheck.MOMENT1 + name] = _cpu(st["exp_avg"])
            out[spotcheck.MOMENT2 + name] = _cpu(st["exp_avg_sq"])
            out[spotcheck.MOMENT_STEP + name] = _cpu(st["step"]).reshape(())
    return out


def _skipped_update(sample: _Pending) -> _Pending:
    """A lazy node's phantom: the real step's inputs and outputs, but weights after = before, as if
    it ran the forward and skipped the backward and the optimizer step."""
    tensors = {k: v for k, v in sample.tensors.items() if not k.startswith(spotcheck.AFTER)}
    tensors.update({spotcheck.AFTER + k[len(spotcheck.WEIGHTS):]: v for k, v in sample.tensors.items()
                    if k.startswith(spotcheck.WEIGHTS)})
    return _Pending(tensors, dict(sample.meta), 0)


@dataclass(frozen=True)
class ServedStep:
    sample: spotcheck.StepSample
    layer_range: tuple[int, int]
    with_embedding: bool
    with_head: bool


def parse_leaves(header: bytes) -> tuple[bytes, ...] | None:
    """The leaves in a prover's header, strictly (None when malformed)."""
    try:
        leaves = tuple(bytes.fromhex(x) for x in json.loads(header)["leaves"])
    except (ValueError, KeyError, TypeError):
        return None
    return leaves if all(len(x) == 32 for x in leaves) and len(leaves) <= 10**6 else None


def parse_served(reply: list[bytes], step: int) -> ServedStep | None:
    """A prover's reply, parsed strictly; None when it is not a well-formed sample."""
    if len(reply) != 2 or len(reply[1]) > MAX_SAMPLE_BYTES:
        return None
    leaves = parse_leaves(reply[0])
    try:
        header = json.loads(reply[0])
        meta = header["meta"]
        first, last = (int(x) for x in meta["layer_range"])
        tensors = load_tensors(reply[1])
    except (ValueError, KeyError, TypeError, RuntimeError):
        return None
    if leaves is None or header.get("v") != 2 or header.get("step") != step or not _meta_ok(meta):
        return None
    return ServedStep(spotcheck.StepSample(step, leaves, tensors, meta), (first, last),
                      meta["with_embedding"], meta["with_head"])


def _meta_ok(meta: Any) -> bool:
    """The scalars of a served step have exactly the expected names and types."""
    if not isinstance(meta, dict) or set(meta) != {"layer_range", "with_embedding", "with_head", "bf16",
                                                   "microbatches", "order", "inner_step", "grad_norm"}:
        return False

    def whole(x: Any, low: int = 0, high: int = 2**31) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and low <= x <= high

    m, order, norm = meta["microbatches"], meta["order"], meta["grad_norm"]
    return (isinstance(meta["layer_range"], list) and len(meta["layer_range"]) == 2
            and all(whole(x) for x in meta["layer_range"])
            and all(isinstance(meta[k], bool) for k in ("with_embedding", "with_head", "bf16"))
            and whole(m, 1, MAX_MICROBATCHES) and isinstance(order, list) and sorted(order) == list(range(m))
            and all(whole(x) for x in order) and whole(meta["inner_step"])
            and (norm is None or (isinstance(norm, float) and math.isfinite(norm) and norm >= 0)))


def step_runner(arch: ModelArchitecture, training: TrainingConfig, served: ServedStep
                ) -> Callable[[spotcheck.StepSample], spotcheck.ReRun]:
    """The verifier's re-execution of a served step: a fresh StageWorker of the verifier's own
    code and training configuration (learning-rate schedule, weight decay, clipping), loaded with
    the served weights and moments, replays every micro-batch's forward and backward in the
    committed order and applies the commit, exactly as the prover's stage did."""
    first, last = served.layer_range
    if not 0 <= first < last <= arch.layers:
        raise ValueError(f"layer range {served.layer_range} is not in the model")

    def run(sample: spotcheck.StepSample) -> spotcheck.ReRun:
        meta = sample.meta
        shard = ModelShard(arch, first, last, with_embedding=served.with_embedding, with_head=served.with_head)
        weights = sample.part(spotcheck.WEIGHTS)
        if {k: tuple(v.shape) for k, v in weights.items()} != {k: tuple(v.shape) for k, v in shard.state_dict().items()}:
            raise ValueError("served weights do not have this layer range's names and shapes")
        shard.load_state_dict(weights)
        stage = StageWorker(shard, training, device="cpu", speed=plan_speed(torch.device("cpu")))
        stage.restore_counters(meta["inner_step"], 0)
        _load_moments(stage, sample)
        key = {"driver": "verify", "step": 0}
        outputs: dict[str, torch.Tensor] = {}
        for mb in meta["order"]:
            inputs = [sample.tensors.get(f"{spotcheck.INPUT}{mb}.{i}") for i in range(2 if served.with_head else 1)]
            if any(t is None for t in inputs):
                raise ValueError(f"micro-batch {mb} has no inputs")
            reply, out = stage.handle_sync(OP_FORWARD, {**key, "mb": mb}, inputs)
            if served.with_head:
                outputs[f"{spotcheck.OUTPUT}{mb}"] = torch.tensor(reply["loss"], dtype=torch.float32)
                continue
            outputs[f"{spotcheck.OUTPUT}{mb}"] = out[0].to(torch.float32)
            grad = sample.tensors.get(f"{spotcheck.GRAD}{mb}")
            if grad is None:
                raise ValueError(f"micro-batch {mb} has no output gradient")
            reply, _ = stage.handle_sync(OP_BACKWARD, {**key, "mb": mb}, [grad])
            if reply.get("status") != "ok":
                raise ValueError(f"backward of micro-batch {mb}: {reply}")
        commit = {**key, "microbatches": meta["microbatches"], "loss": 0.0, "tokens": 0}
        if meta["grad_norm"] is not None:
            own = stage.local_grad_norm("verify", 0) or 0.0
            if not own * (1 - 1e-3) <= meta["grad_norm"] <= max(own, 1e-12) * GRAD_NORM_SPAN:
                raise ValueError(f"claimed gradient norm {meta['grad_norm']:.3g} cannot hold this stage's {own:.3g}")
            commit[GRAD_NORM] = meta["grad_norm"]
        lr = lr_at(meta["inner_step"], training)
        decayed = _decayed(stage, weights, lr * training.weight_decay)
        reply, _ = stage.handle_sync(OP_COMMIT, commit, [])
        if reply.get("status") != "ok":
            raise ValueError(f"commit: {reply}")
        return spotcheck.ReRun(outputs, {k: _cpu(v) for k, v in stage.shard.state_dict().items()}, decayed)

    return run


def _load_moments(stage: StageWorker, sample: spotcheck.StepSample) -> None:
    names = {k[len(spotcheck.MOMENT1):] for k in sample.tensors if k.startswith(spotcheck.MOMENT1)}
    params = dict(stage.shard.named_parameters())
    if not names <= set(params):
        raise ValueError("served optimizer moments name parameters this stage does not have")
    for name in names:
        p = params[name]
        m = sample.tensors[spotcheck.MOMENT1 + name]
        v = sample.tensors.get(spotcheck.MOMENT2 + name)
        t = sample.tensors.get(spotcheck.MOMENT_STEP + name)
        if v is None or t is None or m.shape != p.shape or v.shape != p.shape or t.numel() != 1:
            raise ValueError(f"served optimizer moments of {name} are incomplete or misshapen")
        if not (bool(torch.isfinite(m).all()) and bool(torch.isfinite(v).all()) and bool((v >= 0).all())):
            raise ValueError(f"served optimizer moments of {name} are not finite")
        stage.optimizer.state[p] = {"step": t.to(torch.float32).reshape(()).clone(), "exp_avg": m.to(p.dtype).clone(),
                                    "exp_avg_sq": v.to(p.dtype).clone()}


def _decayed(stage: StageWorker, before: dict[str, torch.Tensor], decay: float) -> dict[str, torch.Tensor]:
    """The weights after weight decay alone (what the update is measured from; buffers and
    parameters that do not train stay as they were)."""
    trained = {id(p) for p in stage.params}
    state = stage.shard.state_dict(keep_vars=True)
    return {k: before[k] * (1 - decay) if id(state[k]) in trained else before[k] for k in before}


FetchSample = Callable[[bytes, str, int], Awaitable[list[bytes]]]
"""(prover's public key, proof id, step) -> the prover's reply, [header, blob] ([header] for step
``LEAVES_ONLY``, which asks for the leaves only); raises or returns [] when it had nothing."""


@dataclass
class _Watch:
    proof: Record
    closes_ms: int  # the end of its challenge window
    drawn: bool = False  # our own draw is done (held pass or nothing drawn)
    held: spotcheck.CheckResult | None = None  # a pass from our draw, signed late in the window


@dataclass
class Verifier:
    key: Any
    ledger: Ledger
    arch: ModelArchitecture | Callable[[], ModelArchitecture]
    """The network's architecture, or a function giving the current one (vocabulary growth)."""
    fetch: FetchSample
    config: EconomicsConfig
    submit: Callable[[Record], None]
    clock: Callable[[], float]
    training: TrainingConfig = field(default_factory=TrainingConfig)
    """The network's training configuration: the schedule and optimizer a step is re-run with."""
    checks: dict[int, int] = field(default_factory=dict)  # epoch -> checks done
    verdicts: list[tuple[str, bool, str]] = field(default_factory=list)  # (proof id, passed, reason)
    steps_run: int = 0  # committed steps re-executed (the overhead benchmark reads it)
    _salt: bytes = field(default_factory=lambda: os.urandom(32))
    _cursor: int = 0
    _watching: dict[str, _Watch] = field(default_factory=dict)
    _judged: set[str] = field(default_factory=set)

    async def round(self) -> int:
        """One pass over what is new since the last round and the proofs still pending; returns
        how many verdicts it signed."""
        if self.ledger.balance(self.key.address).staked < self.config.min_verifier_stake:
            return 0  # verdicts without stake are refused: nothing to do until the volunteer stakes
        self._take_new()
        now_ms = int(self.clock() * 1000)
        done = 0
        for proof_id, watch in list(self._watching.items()):
            cutoff = watch.closes_ms - self.config.epoch_ms  # leave a verdict time to spread before it closes
            is_open, standing = self.ledger.proof_standing(proof_id)
            if now_ms >= cutoff or proof_id in self._judged or not is_open \
                    or self.ledger.judged_by(proof_id, self.key.address):
                del self._watching[proof_id]  # closed, settled or judged: never looked at again
                continue
            if standing is not None:  # refereeing: exactly the step a standing fail names
                result = await self._check_step(watch.proof, standing, await self._fetch(watch.proof, standing))
            elif not watch.drawn:
                result = await self._draw(watch)
                if result is not None and result.passed:
                    watch.held, result = result, None
            elif watch.held is not None and now_ms >= cutoff - HOLD_PASS_EPOCHS * self.config.epoch_ms:
                result = watch.held
            else:
                continue
            if result is None:
                continue
            self._sign(watch.proof, result)
            del self._watching[proof_id]
            done += 1
        return done

    def _take_new(self) -> None:
        """Training proofs of others that reached the ledger since the last round."""
        while True:
            proofs, self._cursor, more = self.ledger.verification_work_since(self._cursor)
            for proof in proofs:
                if proof.author == self.key.public_key.data or proof.record_id in self._watching:
                    continue
                body = proof.body
                closes = (body["epoch"] + 1) * self.config.epoch_ms + self.config.challenge_window_ms
                self._watching[proof.record_id] = _Watch(proof, closes)
            if not more:
                return

    def pending(self) -> int:
        """Proofs this verifier still watches (window open, not judged)."""
        return len(self._watching)

    def _sign(self, proof: Record, result: spotcheck.CheckResult) -> None:
        self._judged.add(proof.record_id)
        seq = self.ledger.next_seq(self.key.address)
        record = spotcheck.challenge_record(self.key, self.config, proof.record_id, result, seq,
                                            int(self.clock() * 1000))
        self.submit(record)
        self.verdicts.append((proof.record_id, result.passed, result.reason))
        epoch = record.timestamp_ms // self.config.epoch_ms
        self.checks[epoch] = self.checks.get(epoch, 0) + 1
        log.info("checked %s's proof %s: %s (%s)", proof.author_address[:12], proof.record_id[:12],
                 "pass" if result.passed else "FAIL", result.reason)

    async def _draw(self, watch: _Watch) -> spotcheck.CheckResult | None:
        """Our own draw over the proof's committed steps: the first failing step, else a pass on
        the first drawn one; None when the draw picked no step."""
        watch.drawn = True
        proof = watch.proof
        if self.config.fault_grief:  # devnet fault injection (constants.py): a griefer forges a fail
            return spotcheck.CheckResult(False, "forged by a devnet griefer",
                                         spotcheck.Evidence(0, b"\1" * 32, b"\1" * 32, spotcheck.MAX_ERROR_PPM))
        try:
            header = await self.fetch(proof.author, proof.record_id, LEAVES_ONLY)
        except Exception as exc:  # an unreachable prover cannot show its work
            log.debug("leaves fetch from %s failed: %s", proof.author_address[:12], exc)
            header = []
        leaves = parse_leaves(header[0]) if len(header) == 1 else None
        if leaves is None or spotcheck.work_root(leaves).hex() != proof.body.get("work_root"):
            return spotcheck.unavailable(0, "the prover did not serve its committed steps")
        result = None
        for pick in spotcheck.drawn_steps(self._salt, proof.record_id, len(leaves), self.config.spot_check_rate,
                                          self.config.spot_check_steps):
            result = await self._check_step(proof, pick, await self._fetch(proof, pick))
            if not result.passed:
                return result
        return result

    async def _check_step(self, proof: Record, step: int, served: ServedStep | None) -> spotcheck.CheckResult:
        if served is None:
            return spotcheck.unavailable(step, "the prover did not serve the committed step")
        try:
            run = step_runner(self.arch() if callable(self.arch) else self.arch, self.training, served)
        except ValueError as exc:
            return spotcheck.unavailable(step, str(exc))
        self.steps_run += 1
        return await asyncio.get_running_loop().run_in_executor(
            None, spotcheck.check_sample, dict(proof.body), served.sample, step, run, self.config)

    async def _fetch(self, proof: Record, step: int) -> ServedStep | None:
        try:
            reply = await self.fetch(proof.author, proof.record_id, step)
        except Exception as exc:  # an unreachable prover cannot show its work
            log.debug("sample fetch from %s failed: %s", proof.author_address[:12], exc)
            return None
        return parse_served(reply, step)

    def take_checks(self, epoch: int) -> int:
        return self.checks.pop(epoch, 0)
