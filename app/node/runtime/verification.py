"""Verify mode, both sides: the prover keeps what its proofs commit to, the verifier re-runs it.

**Prover (``StepLog``, every training node).** The stage calls ``on_forward`` for each forward
(lock held). For the first micro-batch of every step the log keeps a CPU copy of the weights as
they were before the step, the micro-batch inputs and the output the stage computed, and its
leaf (``economics/spotcheck.py``). When the economy credits the step (``seal``), the sample joins
that epoch's list; the epoch's training proof commits to the leaves (``work_root``) and the log
serves any of them, by proof id and step, until the proof's challenge window closes.

**Verifier (``Verifier``, a node with mode "verify" and stake).** Each round it looks through the
pending training proofs of others in its ledger whose window is open and re-checks: the ones the
deterministic draw gives it (``spot_check_rate``), and every proof someone has already failed
(refereeing: it re-runs exactly the step the challenge names, so one honest verifier answers a
griefer). It fetches the sample from the prover (``fetch``), re-runs the forward with its own
copy of the model code on the served weights, signs the verdict with its evidence into the
ledger, and counts the check for its verification proof.

Memory: the log keeps one weights copy per step of the open window, at most ``max_bytes_kept``
(1 GiB) in all: cheap for the devnet's tiny model (about 1 MiB a step), a few steps per window
for a large stage. A step that would pass the budget is not committed, and the economy does not
claim it either (``seal`` returns None): unchecked work is not paid, so a large model's node is
paid for fewer steps than it ran until samples get smaller (one layer instead of the stage).

Transport: samples travel as one safetensors blob (never a pickle) with a JSON header on the
ledger service's topic-routed ``Gossip`` call (``VERIFY_TOPIC``), authenticated like any gossip.
"""

from __future__ import annotations

import asyncio
import json
import logging
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
from app.node.model.shard import ModelShard, lm_loss

log = logging.getLogger("neuroshard.verification")
VERIFY_TOPIC = "verify"
MAX_SAMPLE_BYTES = 64 * 2**20
"""A served sample larger than this is refused unread (the tiny model's is ~1 MiB)."""


@dataclass
class _Pending:
    weights: dict[str, torch.Tensor]
    inputs: tuple[torch.Tensor, ...]
    output: torch.Tensor
    layer_range: tuple[int, int]
    with_embedding: bool
    with_head: bool
    bf16: bool = False

    @property
    def nbytes(self) -> int:
        tensors = [*self.weights.values(), *self.inputs, self.output]
        return sum(t.numel() * t.element_size() for t in tensors)

    def leaf(self) -> bytes:
        return spotcheck.leaf(spotcheck.tensor_hash(self.weights), spotcheck.tensor_hash(list(self.inputs)),
                              spotcheck.tensor_hash([self.output]))


@dataclass
class _Published:
    epoch: int
    leaves: tuple[bytes, ...]
    samples: list[_Pending]


class StepLog:
    """The prover's record of its committed steps (see the module docstring)."""

    def __init__(self, config: EconomicsConfig, *, max_bytes_kept: int = 2**30, phantom_steps: int = 0) -> None:
        """``phantom_steps`` > 0 makes a *lazy* node (devnet fault injection only): for every
        step it ran it also claims that many steps it never computed, committing made-up outputs."""
        self.config = config
        self.max_bytes_kept = max_bytes_kept
        self.phantom_steps = phantom_steps
        self._lock = threading.Lock()
        self._pending: OrderedDict[tuple[str, int], _Pending] = OrderedDict()
        self._published: dict[str, _Published] = {}
        self._kept = 0
        self._wired = False  # a stage feeds this log: from then on every claimed step needs a sample

    def on_forward(self, stage: Any, driver: str, step: int, mb: int, inputs: list[torch.Tensor],
                   output: torch.Tensor) -> None:
        """StageWorker's forward hook (lock held): keeps micro-batch 0 of each step."""
        self._wired = True
        if mb != 0 or (driver, step) in self._pending:
            return
        shard = stage.shard
        sample = _Pending(
            weights={k: v.detach().to("cpu", copy=True) for k, v in shard.state_dict().items()},
            inputs=tuple(t.detach().to("cpu", copy=True) for t in inputs),
            output=output.detach().to("cpu", torch.float32, copy=True),
            layer_range=tuple(stage.layer_range), with_embedding=stage.is_first, with_head=stage.is_last,
            bf16=bool(getattr(getattr(stage, "speed", None), "autocast_bf16", False)))
        with self._lock:
            self._pending[(driver, step)] = sample
            while len(self._pending) > 8:  # forwards whose step never committed
                self._pending.popitem(last=False)

    def seal(self, driver: str, step: int) -> list[_Pending] | None:
        """The step is being credited: its sample (plus phantoms, for a lazy node) leaves the
        pending set. [] when no stage feeds this log (no forward hook: nothing is ever committed);
        None when the step cannot be committed, so it must not be claimed: keeping it would pass
        the memory budget, or its first micro-batch never ran here (a replica took the step over
        mid-way), since a verifier would find the claim without its sample."""
        with self._lock:
            sample = self._pending.pop((driver, step), None)
            if sample is None:
                # A worker's or validator's StepInfo counts steps locally, not in the driver's
                # numbering: its commit is the driver's newest step here (a driver commits a step
                # before it starts the next one).
                newest = [key for key in self._pending if key[0] == driver]
                sample = self._pending.pop(newest[-1]) if newest else None
        if sample is None:
            return None if self._wired else []
        if self._kept + sample.nbytes > self.max_bytes_kept:
            return None
        made_up = [_Pending(sample.weights, sample.inputs, torch.randn_like(sample.output), sample.layer_range,
                            sample.with_embedding, sample.with_head, sample.bf16) for _ in range(self.phantom_steps)]
        self._kept += sample.nbytes  # the phantoms share the real sample's tensors
        return [sample, *made_up]

    def release(self, samples: list[_Pending]) -> None:
        """Samples sealed but never published (their epoch made no proof): free their budget."""
        with self._lock:
            self._kept -= sum(s.nbytes for s in _distinct(samples))

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
                self._kept -= sum(s.nbytes for s in _distinct(self._published.pop(proof_id).samples))

    def serve(self, request: list[bytes]) -> list[bytes]:
        """Answers a verifier: [header] -> [header, safetensors blob], or [] if not held."""
        try:
            ask = json.loads(request[0])
            proof_id, step = str(ask["proof_id"]), ask["step"]
        except (IndexError, ValueError, KeyError, TypeError):
            return []
        if not isinstance(step, int) or isinstance(step, bool):
            return []
        with self._lock:
            published = self._published.get(proof_id)
        if published is None or not 0 <= step < len(published.samples):
            return []
        sample = published.samples[step]
        tensors = {f"w.{k}": v.contiguous() for k, v in sample.weights.items()}
        tensors.update({f"in.{i}": t.contiguous() for i, t in enumerate(sample.inputs)})
        tensors["out"] = sample.output.contiguous()
        header = {"v": 1, "step": step, "leaves": [x.hex() for x in published.leaves],
                  "layer_range": list(sample.layer_range), "with_embedding": sample.with_embedding,
                  "with_head": sample.with_head, "bf16": sample.bf16}
        return [json.dumps(header).encode(), save_tensors(tensors)]


def _distinct(samples: list[_Pending]) -> list[_Pending]:
    """One per weights copy: a lazy node's phantoms share their real sample's tensors."""
    seen: set[int] = set()
    out = []
    for s in samples:
        if id(s.weights) not in seen:
            seen.add(id(s.weights))
            out.append(s)
    return out


@dataclass(frozen=True)
class ServedStep:
    sample: spotcheck.StepSample
    layer_range: tuple[int, int]
    with_embedding: bool
    with_head: bool


def parse_served(reply: list[bytes], step: int) -> ServedStep | None:
    """A prover's reply, parsed strictly; None when it is not a well-formed sample."""
    if len(reply) != 2 or len(reply[1]) > MAX_SAMPLE_BYTES:
        return None
    try:
        header = json.loads(reply[0])
        leaves = tuple(bytes.fromhex(x) for x in header["leaves"])
        first, last = (int(x) for x in header["layer_range"])
        with_embedding, with_head = bool(header["with_embedding"]), bool(header["with_head"])
        bf16 = header.get("bf16", False) is True
        tensors = load_tensors(reply[1])
    except (ValueError, KeyError, TypeError, RuntimeError):
        return None
    if header.get("v") != 1 or header.get("step") != step or any(len(x) != 32 for x in leaves):
        return None
    weights = {k[2:]: v for k, v in tensors.items() if k.startswith("w.")}
    inputs = tuple(tensors[f"in.{i}"] for i in range(sum(k.startswith("in.") for k in tensors)) if f"in.{i}" in tensors)
    if "out" not in tensors:
        return None
    return ServedStep(spotcheck.StepSample(step, leaves, weights, inputs, tensors["out"], bf16), (first, last),
                      with_embedding, with_head)


def forward_runner(arch: ModelArchitecture, served: ServedStep) -> Callable[[dict, tuple], torch.Tensor]:
    """The verifier's own model code for the served layer range: a fresh shard of the network's
    architecture run functionally on the served weights (same names and shapes, or it fails)."""
    first, last = served.layer_range
    if not 0 <= first < last <= arch.layers:
        raise ValueError(f"layer range {served.layer_range} is not in the model")
    shard = ModelShard(arch, first, last, with_embedding=served.with_embedding, with_head=served.with_head)
    expected = {k: tuple(v.shape) for k, v in shard.state_dict().items()}

    def run(weights: dict, inputs: tuple) -> torch.Tensor:
        if {k: tuple(v.shape) for k, v in weights.items()} != expected:
            raise ValueError("served weights do not have this layer range's names and shapes")
        shard.train()  # as the stage ran it (dropout-free model: same function as eval)
        x = inputs[0] if served.with_embedding else inputs[0].to(torch.float32)  # as StageWorker._input
        out = torch.func.functional_call(shard, weights, (x,), strict=False)  # names checked above
        if served.with_head:
            return lm_loss(out, inputs[1])
        return out

    return run


FetchSample = Callable[[bytes, str, int], Awaitable[list[bytes]]]
"""(prover's public key, proof id, step) -> the prover's reply (empty if it had nothing)."""


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
    checks: dict[int, int] = field(default_factory=dict)  # epoch -> checks done
    verdicts: list[tuple[str, bool, str]] = field(default_factory=list)  # (proof id, passed, reason)
    _judged: set[str] = field(default_factory=set)

    async def round(self) -> int:
        """One pass over the open proofs; returns how many it checked."""
        now_ms = int(self.clock() * 1000)
        done = 0
        if self.ledger.balance(self.key.address).staked < self.config.min_verifier_stake:
            return 0  # verdicts without stake are refused: nothing to do until the volunteer stakes
        for proof, challenged_step in self.ledger.open_training_proofs(now_ms, exclude=self.key.public_key.data):
            if proof.record_id in self._judged or self.ledger.judged_by(proof.record_id, self.key.address):
                continue
            mine = spotcheck.should_check(proof.record_id, self.key.public_key.data, self.config.spot_check_rate)
            if challenged_step is None and not mine:
                continue
            self._judged.add(proof.record_id)
            result = await self._check(proof, challenged_step)
            seq = self.ledger.next_seq(self.key.address)
            record = spotcheck.challenge_record(self.key, self.config, proof.record_id, result, seq,
                                                int(self.clock() * 1000))
            self.submit(record)
            self.verdicts.append((proof.record_id, result.passed, result.reason))
            epoch = record.timestamp_ms // self.config.epoch_ms
            self.checks[epoch] = self.checks.get(epoch, 0) + 1
            done += 1
            log.info("checked %s's proof %s: %s (%s)", proof.author_address[:12], proof.record_id[:12],
                     "pass" if result.passed else "FAIL", result.reason)
        return done

    async def _check(self, proof: Record, step: int | None) -> spotcheck.CheckResult:
        if step is not None:  # refereeing: exactly the step a standing challenge names
            return await self._check_step(proof, step, await self._fetch(proof, step))
        probe = await self._fetch(proof, 0)  # our own draw: first learn how many steps were committed
        if probe is None:
            return spotcheck.unavailable(0, "the prover did not serve its committed steps")
        result = None
        for pick in spotcheck.sampled_steps(proof.record_id, self.key.public_key.data, len(probe.sample.leaves),
                                            self.config.spot_check_steps):
            served = probe if pick == 0 else await self._fetch(proof, pick)
            result = await self._check_step(proof, pick, served)
            if not result.passed:
                return result
        assert result is not None
        return result

    async def _check_step(self, proof: Record, step: int, served: ServedStep | None) -> spotcheck.CheckResult:
        if served is None:
            return spotcheck.unavailable(step, "the prover did not serve the committed step")
        try:
            run = forward_runner(self.arch() if callable(self.arch) else self.arch, served)
        except ValueError as exc:
            return spotcheck.unavailable(step, str(exc))
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
