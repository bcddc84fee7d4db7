"""A demo engine for screenshots and UI review: plausible state, no network, no torch.

It implements what the UI needs of an engine (``bridge.EngineLike``): canned answers to queries
and a burst of events describing a node mid-training in a small network. It is never used by the
running app.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
from collections.abc import Callable
from typing import Any

from app.node.events import (
    ActivityChanged,
    BalanceChanged,
    Command,
    Event,
    HardwareMeasured,
    LayersAssigned,
    LogLine,
    ModesChanged,
    NetworkChanged,
    NodeState,
    PeerJoined,
    ProofAccepted,
    Query,
    QuorumChanged,
    StatusChanged,
    StepDone,
    UpgradeAvailable,
    VocabularyChanged,
)

UNIT = 10**6
DEMO_ADDRESS = "ns1" + "5f3a9c0d2b7e4f6a8c1d3e5f7a9b0c2d4e6f8a1b" + "0c2d4e6f"
DAY = 86_400


def _peers() -> list[dict[str, Any]]:
    tiers = ("T2", "T3", "T4", "T3", "T1")
    return [{"node_id": f"{i:02x}" * 16, "address": f"203.0.113.{10 + i}:7450", "tier": tiers[i],
             "layers": [i * 2, i * 2 + 4], "latency_ms": 18.0 + 9 * i} for i in range(5)]


def _answers(now: float) -> dict[str, Any]:
    kinds = ("training", "uptime", "data")
    earnings = [{"day": time.strftime("%Y-%m-%d", time.gmtime(now - d * DAY)), "kind": k,
                 "units": int((1.5 + math.sin(d + i)) * UNIT * (3 if k == "training" else 0.4))}
                for d in range(7) for i, k in enumerate(kinds)]
    history = [{"time": now - 3600 * i, "kind": ("reward", "transfer", "stake", "reward")[i % 4],
                "amount_units": (12_500 * (i + 1)) * (-1 if i % 4 == 1 else 1), "fee_units": 1 if i % 4 == 1 else 0,
                "counterparty": "ns1" + "ab" * 24 if i % 4 == 1 else "", "status": "applied", "id": f"{i:064x}"}
               for i in range(12)]
    proposals = [
        {"id": "a1" * 32, "title": "Common English pairs", "phase": "voting", "phase_ends_at": now + 3 * DAY + 7200,
         "yes_weight": 420 * UNIT, "no_weight": 90 * UNIT, "staked_supply": 1200 * UNIT,
         "merges": [[b"t", b"h"], [b"th", b"e"], [b" ", b"the"], [b"i", b"n"], [b"in", b"g"]],
         "proposer": "ns1" + "cd" * 24},
        {"id": "b2" * 32, "title": "Python keywords", "phase": "discussion", "phase_ends_at": now + 5 * DAY,
         "yes_weight": 0, "no_weight": 0, "staked_supply": 1200 * UNIT,
         "merges": [[b"de", b"f"], [b"re", b"turn"]], "proposer": "ns1" + "ef" * 24},
    ]
    return {
        "wallet": {"address": DEMO_ADDRESS, "available_units": 184_250_000, "staked_units": 100 * UNIT,
                   "pending_units": 3_125_000, "validated_units": 11_400_000},
        "history": history, "earnings": earnings, "proposals": proposals, "peers": _peers(),
        "reachability": {"reachable": False, "relay": "relay-eu-2.neuroshard.net:7450"},
        "model_state": {"architecture_version": 3, "layers": 24, "hidden": 1024, "training_step": 3120,
                        "held_out_loss": None, "holds_whole_model": False},
        "quote_generation": {"where": "the network", "price_per_token_units": 312, "most_units": 312 * 64,
                             "stages": 4},
    }


def demo_events(now: float) -> list[Event]:
    events: list[Event] = [
        StatusChanged(state=NodeState.TRAINING),
        HardwareMeasured(device="cuda", device_name="NVIDIA GeForce RTX 3060", memory_bytes=12 * 2**30,
                         ms_per_layer=14.2, tier="T2"),
        ModesChanged(active=("pipeline", "data", "inference"), proposed=("pipeline", "data", "inference"),
                     unavailable=(("verify", "needs 100 NEURO staked"),
                                  ("async", "the whole model does not fit in the memory allowed"))),
        LayersAssigned(first_layer=4, last_layer=8, roles=("worker",), architecture_version=3, total_layers=16,
                       hidden=768, parameters=124_000_000),
        NetworkChanged(reachable=False, relay="relay-eu-2.neuroshard.net:7450", peers=5, phase="micro",
                       replicas_per_layer=(3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 2, 2, 2, 3, 3, 2)),
        QuorumChanged(quorum_id="q-7f3e21", state="training", members=("a", "b", "c", "d"), speed_class="fast"),
        ActivityChanged(activity="training step 312 of 500"),
        BalanceChanged(address=DEMO_ADDRESS, available_units=184_250_000, staked_units=100 * UNIT,
                       pending_units=3_125_000),
        UpgradeAvailable(current_version=3, candidate_version=4, current_parameters=124_000_000,
                         candidate_parameters=210_000_000),
        VocabularyChanged(vocab_size=281, merges=15, version="281-3fa9c0d1e2b4a697", applied=("p1", "p2", "p3")),
    ]
    for step in range(1, 313):
        events.append(StepDone(step=step, loss=5.6 * math.exp(-step / 180) + 2.1 + 0.05 * math.sin(step),
                               tokens_per_s=41_000 + 1500 * math.sin(step / 9), tokens_total=step * 65_536))
    for i, peer in enumerate(_peers()):
        events.append(PeerJoined(node_id=peer["node_id"], address=peer["address"], tier=peer["tier"],
                                 layers=tuple(peer["layers"]), latency_ms=peer["latency_ms"]))
        events.append(ProofAccepted(proof_kind="training", epoch=1000 + i, reward_units=1_250_000))
    for message in ("state training", "joined quorum q-7f3e21 (4 members)", "holding layers 4-7 as worker",
                    "checkpoint written (v3, step 300)", "averaging with 3 replicas: done in 2.1 s"):
        events.append(LogLine(level="INFO", message=message))
    return events


class DemoEngine:
    """Answers like a node; ``play()`` delivers the demo events to subscribers."""

    def __init__(self) -> None:
        self.now = time.time()
        self._subscribers: list[Callable[[Event], None]] = []
        self._latest: dict[str, Event] = {}
        self.answers = _answers(self.now)

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def latest(self, kind: str) -> Event | None:
        return self._latest.get(kind)

    def play(self) -> None:
        for event in demo_events(self.now):
            self._latest[event.kind] = event
            for callback in list(self._subscribers):
                callback(event)

    def post(self, command: Command) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if isinstance(command, Query) and command.what in self.answers:
            future.set_result(self.answers[command.what])
        elif command.name in self.answers:
            future.set_result(self.answers[command.name])
        else:
            future.set_result(True)
        return future
