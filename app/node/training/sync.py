"""StageSync: the DiLoCo outer step between the holders of one layer range.

Every ``inner_steps`` committed steps the stage closes its gate (no new forward enters), takes the
pseudo-gradient ``anchor − current`` (diloco.py), compresses it (compression.py, with error
feedback for bf16/int8), swaps it with the cohort through the CohortTransport, and applies the
robust aggregate (aggregation.py: trimmed mean weighted by sqrt(batches) × freshness) as an outer
Nesterov step. With ``held_out`` (a stage holding the whole model), each contribution is first
scored alone on held-out genesis tokens (scoring.py) and one that raises the loss is left out, so
one poisoned replica of two cannot move the weights. Every member aggregates the same *decoded* payloads in node-id order, its own
included, so holders that saw the same round end with bit-identical weights.

The sync runs inside the commit that made it due, so the driver whose step triggered it waits
for it: DiLoCo is synchronous per round, and a stage never trains on half-updated weights.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import torch

from app.node.training.aggregation import AggregationError, Contribution, aggregate
from app.node.training.compression import (
    ErrorFeedback,
    decode_pseudo_gradient,
    encode_pseudo_gradient,
    encoded_nbytes,
)
from app.node.training.config import TrainingConfig
from app.node.training.diloco import DiLoCoConfig, DiLoCoReplica
from app.node.training.poison import poisoned
from app.node.training.scoring import DEFAULT_MARGIN, HeldOutLoss, screen
from app.node.training.stage import StageWorker
from app.node.training.transport import CohortPayload, CohortTransport

log = logging.getLogger("neuroshard.training.sync")


@dataclass(frozen=True)
class SyncReport:
    round: int
    members: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]
    bytes_sent: int
    seconds: float
    merged_async: tuple[tuple[str, int], ...] = ()
    """(node id, batches) of the async contributions this outer step merged (PoNW pays them)."""


PeerDiLoCoState = tuple[dict, dict, int]
"""A peer's post-round DiLoCo state: anchor, outer momentum, rounds it closed."""
FetchPeerState = Callable[[tuple[int, int], str], Awaitable[PeerDiLoCoState | None]]


@dataclass
class StageSync:
    node_id: str
    stage: StageWorker
    cohort: CohortTransport | None
    config: TrainingConfig
    on_report: Callable[[StageSync, SyncReport], None] | None = None
    """Told after every outer round, with this sync (a listener may outlive a stage it left)."""
    on_start: Callable[[], None] | None = None
    fetch_peer_state: FetchPeerState | None = None
    """Fetches the DiLoCo state of a peer that closed the round without us (``catch_up_with``)."""
    held_out: HeldOutLoss | None = None
    """Loss of this stage's weights on held-out tokens; None where the stage cannot compute one."""
    held_out_margin: float = DEFAULT_MARGIN
    replica: DiLoCoReplica = field(init=False)
    feedback: ErrorFeedback | None = field(init=False)
    rounds: int = 0
    bytes_sent: int = 0
    reports: list[SyncReport] = field(default_factory=list)
    _own_steps_left: int | None = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.replica = DiLoCoReplica(self.stage.shard, DiLoCoConfig(
            inner_steps=self.config.inner_steps, outer_lr=self.config.outer_lr,
            outer_momentum=self.config.outer_momentum, nesterov=True))
        self.feedback = None if self.scheme == "fp32" else ErrorFeedback()

    @property
    def scheme(self) -> str:
        return {"none": "fp32"}.get(self.config.compression, self.config.compression)

    def note_commit(self) -> None:
        self.replica.record_inner_step()

    def note_own_steps(self, left: int | None) -> None:
        """Steps this node's driver has still to commit on this stage (None: unbounded, 0: none)."""
        self._own_steps_left = left

    @property
    def trains_this_round(self) -> bool:
        """Our driver will reach the end of the current round, so our payload for it will come: a
        peer that got there first waits for it even before our first step in the round."""
        left = self._own_steps_left
        return left is None or left >= max(1, self.config.inner_steps - self.replica.inner_steps_done)

    def will_send_for(self, round_: int) -> bool:
        """Our payload for DiLoCo round ``round_`` will come: it is the current round and
        ``trains_this_round``, or a later one our driver has the steps to reach the end of. A peer
        ahead of us asks while we still close the round before (a step or two behind it): it must
        wait for us rather than close its round alone and drop our work. The steps left may still
        count a step being committed, so near a plan's end this can say yes one step early; that
        costs the peer a wait bounded by its sync timeout, never lost work."""
        if round_ < self.rounds:
            return False
        if round_ == self.rounds:
            return self.trains_this_round
        left = self._own_steps_left
        inner = self.config.inner_steps
        needed = max(0, inner - self.replica.inner_steps_done) + (round_ - self.rounds) * inner
        return left is None or left >= needed

    @property
    def due(self) -> bool:
        return self.replica.should_sync()

    async def sync(self) -> SyncReport:
        """One outer round; always reopens the stage's gate, even when the exchange failed."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        if self.on_start is not None:
            self.on_start()
        self.stage.gate.close()
        try:
            encoded = await loop.run_in_executor(self.stage.executor, self._encode)
            mine = CohortPayload(self.node_id, self.rounds, self.replica.inner_steps_done, 0.0, encoded)
            others: list[CohortPayload] = []
            asyncs: list[CohortPayload] = []
            if self.cohort is not None:
                others = await self.cohort.exchange(self.stage.layer_range, self.rounds, mine,
                                                    self.config.sync_timeout_s)
                asyncs = self.cohort.take_async(self.stage.layer_range)
            sent = encoded_nbytes(encoded) * sum(1 for p in others if p.round == self.rounds)
            result = await loop.run_in_executor(self.stage.executor, self._apply, [mine, *others, *asyncs])
            merged = set(result[0])
            report = SyncReport(self.rounds, tuple(result[0]), tuple(result[1]), sent, loop.time() - began,
                                tuple((p.node_id, p.batches) for p in asyncs if p.node_id in merged))
            self.rounds += 1
            if self.cohort is not None and self.can_catch_up:  # still behind the closed gate
                for peer in self.cohort.ahead_of_us(self.stage.layer_range):
                    if await self.catch_up_with(peer):
                        break
        finally:
            self.stage.gate.reopen()
        self.bytes_sent += sent
        self.reports.append(report)
        if self.on_report is not None:
            self.on_report(self, report)
        return report

    @property
    def can_catch_up(self) -> bool:
        return self.fetch_peer_state is not None

    async def catch_up_with(self, peer: str) -> bool:
        """Copy the post-round DiLoCo state of ``peer``, which closed the round without us, so the
        cohort shares one anchor again (a late member otherwise stays on its own anchor for good).
        Call it with the gate closed. False when the peer had nothing to give."""
        got = await self.fetch_peer_state(self.stage.layer_range, peer) if self.fetch_peer_state else None
        if got is None:
            return False
        anchor, momentum, rounds = got
        loop = asyncio.get_running_loop()
        if self.held_out is not None:  # a peer's state is merged wholesale: it passes the contributions' test
            why = await loop.run_in_executor(self.stage.executor, self._screen_state, peer, anchor)
            if why:
                log.warning("did not take %s's DiLoCo state: it %s", peer[:12], why)
                return False
        await loop.run_in_executor(self.stage.executor, self.adopt, anchor, momentum, rounds)
        log.info("late for a DiLoCo round: took %s's anchor (round %d)", peer[:12], rounds)
        return True

    def _screen_state(self, peer: str, anchor: dict) -> str:
        """Why ``peer``'s anchor may not replace ours (held-out scoring, as for a contribution:
        the difference to our anchor is screened like a pseudo-gradient); empty when it may."""
        with self.stage.lock:
            ours = {name: tensor.clone() for name, tensor in self.replica.anchor.items()}
        if set(anchor) != set(ours) or any(tuple(anchor[n].shape) != tuple(t.shape) for n, t in ours.items()):
            return "does not match this stage's parameters"
        difference = {name: ours[name] - anchor[name].to(ours[name].dtype) for name in ours}
        screening = screen([Contribution(peer, difference, 1, 0.0)], ours, self.held_out, self.held_out_margin)
        return screening.rejected[0][1] if screening.rejected else ""

    def adopt_position(self, rounds: int | None = None, inner_steps_done: int = 0) -> None:
        """The stage's weights were just replaced by a replica's: they become the anchor, and the
        round counters the replica's (``rounds`` None: keep ours)."""
        self.replica.reset_anchor()
        if inner_steps_done:
            self.replica.record_inner_step(inner_steps_done)
        if rounds is not None:
            self.rounds = rounds

    def restore(self, diloco: dict[str, torch.Tensor], inner_steps_done: int, outer_steps_done: int,
                rounds: int) -> None:
        """Counters and (when saved) anchor and momentum from a checkpoint."""
        if diloco:
            self.replica.load_flat_state(diloco, inner_steps_done, outer_steps_done)
        self.rounds = rounds

    def adopt_grown_state(self, diloco_state: dict, grown_residual: dict[str, torch.Tensor]) -> None:
        """The shard's vocabulary-shaped parameters were replaced by grown ones (vocab_growth.py):
        track the new parameter objects with ``diloco_state`` (anchor and momentum already grown)
        and take the grown compression residuals."""
        replica = DiLoCoReplica(self.stage.shard, self.replica.config)
        replica.load_state_dict(diloco_state)
        self.replica = replica
        if self.feedback is not None:
            self.feedback.residual.update(grown_residual)

    def adopt(self, anchor: dict, momentum: dict, rounds: int) -> None:
        """Take a peer's post-round DiLoCo state: its anchor becomes our weights and anchor."""
        with self.stage.lock:
            self.replica.load_state_dict({"anchor": anchor, "momentum": momentum, "inner_steps_done": 0,
                                          "outer_steps_done": self.replica.outer_steps_done})
            self.stage.drop_graphs()  # forward graphs built on the old weights are void
            params = dict(self.stage.shard.named_parameters())
            with torch.no_grad():
                for name, tensor in self.replica.anchor.items():
                    params[name].copy_(tensor.to(params[name].dtype))
        self.rounds = rounds

    def _encode(self) -> dict:
        with self.stage.lock:
            pseudo_gradient = self.replica.pseudo_gradient()
        if self.config.fault_poison_scale:  # devnet fault injection (poison.py)
            pseudo_gradient = poisoned(pseudo_gradient, self.config.fault_poison_scale, self.rounds)
        return encode_pseudo_gradient(pseudo_gradient, self.scheme, self.feedback)

    def _apply(self, payloads: list[CohortPayload]) -> tuple[list[str], list[tuple[str, str]]]:
        shapes = {name: tuple(t.shape) for name, t in self.replica.anchor.items()}
        contributions, rejected = [], []
        for payload in sorted(payloads, key=lambda p: p.node_id):
            try:
                tensors = decode_pseudo_gradient(payload.tensors, self.scheme, shapes)
            except ValueError as exc:
                rejected.append((payload.node_id, f"undecodable pseudo-gradient: {exc}"))
                continue
            contributions.append(Contribution(payload.node_id, tensors, max(1, payload.batches), payload.age_s))
        with self.stage.lock:
            if self.held_out is not None:
                screening = screen(contributions, self.replica.anchor, self.held_out, self.held_out_margin)
                contributions, rejected = screening.accepted, rejected + screening.rejected
            try:
                result = aggregate(contributions, expected=None)
            except AggregationError as exc:  # nothing usable: keep training from the current weights
                log.warning("outer step skipped: %s", exc)
                self.replica.reset_anchor()
                return [], rejected
            self.replica.apply_outer(result.tensors)
        if result.rejected:
            log.warning("rejected pseudo-gradients: %s", result.rejected)
        log.info("outer round %d on layers %s: %d contributions accepted (from %s)", self.rounds,
                 self.stage.layer_range, len(result.accepted), ", ".join(n[:12] for n in result.accepted))
        return result.accepted, rejected + list(result.rejected)
