"""What the node tells the outside: its activity line, its steps, its status, queries and summary.

* ``Activity`` is the one-line "what am I doing" every part reports through (ActivityChanged).
* ``StepReports`` is the one path a step's work takes from the trainer: the StepDone event, the
  losses of the run, then the sinks given at construction (the economy's Proof-of-Neural-Work
  first, then any the embedder added).
* ``summary`` / ``answer_query`` read the parts (assembly.py) and never change them;
  ``write_summary`` records the run in ``run_summary.json`` in the data dir (the devnet reads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.node.config import atomic_write_bytes
from app.node.events import ActivityChanged, Event, NodeState, StepDone, VocabularyChanged
from app.node.p2p.invite import InvalidInvite, make_invite
from app.node.runtime.parts import AsyncJob, NodeBase, NodeParts, PipelineJob
from app.node.runtime_api import RunControl
from app.node.training.trainer import StepInfo

if TYPE_CHECKING:
    from app.node.runtime.vocab_service import VocabService

log = logging.getLogger("neuroshard.runtime")

SUMMARY_FILE = "run_summary.json"
PAUSE_POLL_S = 0.2
StepSink = Callable[[StepInfo], None]


class Activity:
    """The node's current activity line; every change is one ActivityChanged event."""

    def __init__(self, emit: Callable[[Event], None]) -> None:
        self._emit = emit
        self._text = ""

    @property
    def text(self) -> str:
        return self._text

    def __call__(self, text: str) -> None:
        if text != self._text:
            self._text = text
            self._emit(ActivityChanged(activity=text))


class StepReports:
    """Where the trainer's ``on_step`` goes (called off the loop thread, see the module doc)."""

    def __init__(self, emit: Callable[[Event], None], sinks: Sequence[StepSink]) -> None:
        self._emit = emit
        self._sinks = tuple(sinks)
        self.losses: list[float] = []

    def record(self, info: StepInfo) -> None:
        if math.isfinite(info.loss):
            self.losses.append(info.loss)
        self._emit(StepDone(step=info.step + 1, loss=info.loss, tokens_per_s=round(info.tokens_per_s, 1),
                            tokens_total=info.tokens_total, inner_step=info.inner_step,
                            inner_steps_per_sync=info.inner_steps_per_sync))
        for sink in self._sinks:
            try:
                sink(info)
            except Exception:
                log.exception("step sink failed")


def emit_vocabulary(vocab: VocabService, emit: Callable[[Event], None]) -> None:
    tokenizer = vocab.tokenizer
    emit(VocabularyChanged(vocab_size=tokenizer.vocab_size, merges=len(tokenizer.merges), version=tokenizer.version,
                           applied=tuple(s.proposal_id for s in vocab.history if s.applied)))


async def watch_pause(control: RunControl, set_state: Callable[[NodeState, str], None]) -> None:
    """Report the volunteer's pause and resume as node states, until cancelled."""
    paused = False
    while True:
        if control.paused != paused:
            paused = control.paused
            set_state(NodeState.PAUSED if paused else NodeState.TRAINING, "paused by the volunteer" if paused else "")
        await asyncio.sleep(PAUSE_POLL_S)


# --- status and queries ------------------------------------------------------------------------
def summary(base: NodeBase | None, parts: NodeParts | None, activity: str) -> dict[str, Any]:
    """What the run did so far (the ``status`` query and ``run_summary.json``)."""
    if parts is not None and isinstance(parts.job, AsyncJob):
        return _async_summary(parts, activity)
    net = base.net if base is not None else None
    job = parts.job if parts is not None else None
    host, trainer, drove = (job.host, job.trainer, job.driver) if job is not None else (None, None, None)
    stats = net.node.stats.snapshot() if net else {}
    losses = base.reports.losses if base is not None else []
    return {
        "node_id": net.node_id if net else "", "roles": list(host.assignment.roles if host else ()),
        "layer_range": list(host.stage.layer_range) if host else [],
        "steps": trainer.own_steps if trainer else 0,
        "taken_over": trainer.taken_over() if trainer else [],  # dead drivers' steps this one trained
        "driver_step": trainer.driver_step if trainer else 0,
        "inner_steps": host.stage.inner_step if host else 0,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "tokens": trainer.tokens_total if trainer else 0,
        "bytes_sent": stats.get("sent", {}), "failovers": drove.failovers if drove else 0,
        "router_failovers": net.node.router.failovers if net else 0, "replays": drove.replays if drove else 0,
        "sync_rounds": host.sync.rounds if host else 0,
        # pseudo-gradients held-out scoring or the robust mean left out (training/sync.py)
        "rejected_contributions": sum(len(r.rejected) for r in host.sync.reports) if host else 0,
        # contributions each outer round weighed, merged or left out (a round closed alone: 1)
        "round_contributions": [len(r.members) + len(r.rejected) for r in host.sync.reports] if host else [],
        "layer_hashes": host.stage.layer_hashes() if host else {},
        # a driver moved to a later stage no longer drives, so it leads no quorum
        "quorum": job.quorums.record() if job is not None and job.quorums and not host.moved else None,
        "moves": job.heal.moves if job is not None and job.heal else 0,
        "solo": net.solo if net else True, "activity": activity,
    }


def _async_summary(parts: NodeParts, activity: str) -> dict[str, Any]:
    a, net = parts.job.service, parts.base.net
    return {"node_id": net.node_id, "roles": ["async"], "layer_range": [], "steps": a.rounds,
            "loss_first": a.losses[0] if a.losses else None, "loss_last": a.losses[-1] if a.losses else None,
            "tokens": a.tokens_total, "bytes_sent": net.node.stats.snapshot().get("sent", {}),
            "failovers": 0, "router_failovers": 0, "replays": 0, "sync_rounds": 0, "layer_hashes": {},
            "quorum": None, "solo": False, "activity": activity}


async def answer_query(what: str, base: NodeBase | None, parts: NodeParts | None, activity: str) -> Any:
    net = base.net if base is not None else None
    if what == "status":
        return summary(base, parts, activity)
    if what == "peers":
        peers = await net.peers() if net else []
        return [{"node_id": r.node_id.hex(), "address": r.dial, "tier": r.tier,
                 "layers": [r.layer_start, r.layer_end], "latency_ms": r.latency_ms} for r in peers]
    if what == "layers":
        job = parts.job if parts is not None else None
        return job.host.stage.layer_hashes() if isinstance(job, PipelineJob) else {}
    if what == "reachability":  # re-runs the self-test (p2p/reachability.py); its event goes out too
        node = net.node if net else None
        tested = await net.test_reachability() if net else None
        peers = len(await net.peers()) if net else 0
        # alone: no other node known, by tracker, DHT or LAN; the node trains its own genesis copy
        lan = net.lan.describe() if net and net.lan else "off in Settings" if net else "off: not started"
        return {"reachable": bool(tested and tested.reachable), "verdict": tested.verdict if tested else "not_listening",
                "address": tested.address if tested else "", "observed": tested.observed if tested else "",
                "relay": node.relay_address if node else "", "port": tested.port if tested else 0,
                "peers": peers, "alone": peers == 0, "lan_discovery": lan}
    if what == "invite":  # a code a friend pastes to join through this node (p2p/invite.py)
        if net is not None and net.reachability is None:
            await net.test_reachability()  # asked before the start-up test finished: test first
        return _invite_for(net)
    raise ValueError(f"unknown query {what!r}; ask for status, peers, layers, reachability or invite")


def _invite_for(net: Any) -> dict[str, Any]:
    """This node's invite code, or why there is none (a friend's computer could not dial it)."""
    tested = net.reachability if net is not None else None
    if net is None or not net.node.address:
        return {"code": "", "why": "this node accepts no connections"}
    if tested is not None and tested.verdict in ("this_computer", "not_listening", "unreachable"):
        return {"code": "", "why": tested.verdict}
    try:
        invite = make_invite(net.node.node_id, net.node.address)
    except InvalidInvite as exc:
        return {"code": "", "why": str(exc)}
    return {"code": invite.code, "address": net.node.address, "why": ""}


def write_summary(data_dir: Path, status: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        atomic_write_bytes(data_dir / SUMMARY_FILE, json.dumps(status).encode())
