"""Quorums: a set of nodes of similar speed that together hold every layer (seed 001).

A quorum is one pipeline: its driver (stage 0) plus one holder per later stage, all of the same
speed class so that no stage waits on a much slower one — fast (T1–T2) or slow (T3–T4); T5
machines train asynchronously and never join one. Lifecycle (an explicit state machine):
FORMING -> TRAINING for a session (1 h by default, DESIGN.md §4) -> RENEWING -> TRAINING again
(if every member is still alive, up to ``max_sessions``) or DISSOLVED. A member that dies is
replaced by a replica of its stage; with no replica left, the quorum dissolves cleanly.
Quorums are recorded in the DHT as versioned records (:meth:`Quorum.to_record`).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RECORD_VERSION = 1
DEFAULT_MAX_SESSIONS = 4
"""Original NeuroShard: 1 h sessions, 4 h at most before the quorum must re-form."""

SPEED_CLASSES = {"T1": "fast", "T2": "fast", "T3": "slow", "T4": "slow", "T5": "async"}


class QuorumState(str, enum.Enum):
    FORMING = "forming"
    TRAINING = "training"
    RENEWING = "renewing"
    DISSOLVED = "dissolved"


TRANSITIONS: dict[QuorumState, frozenset[QuorumState]] = {
    QuorumState.FORMING: frozenset({QuorumState.TRAINING, QuorumState.DISSOLVED}),
    QuorumState.TRAINING: frozenset({QuorumState.RENEWING, QuorumState.DISSOLVED}),
    QuorumState.RENEWING: frozenset({QuorumState.TRAINING, QuorumState.DISSOLVED}),
    QuorumState.DISSOLVED: frozenset(),
}


class QuorumError(ValueError):
    """An invalid transition, or a quorum record that does not parse (with the reason)."""


def speed_class(tier: str) -> str:
    return SPEED_CLASSES.get(tier, "slow")


@dataclass
class Quorum:
    quorum_id: str
    members: dict[int, str]  # stage index -> node id
    speed: str
    session_s: float
    formed_at: float
    state: QuorumState = QuorumState.FORMING
    sessions: int = 0
    max_sessions: int = DEFAULT_MAX_SESSIONS
    history: list[str] = field(default_factory=list)

    @property
    def driver(self) -> str:
        return self.members[0]

    def _set_state(self, state: QuorumState, why: str) -> None:
        if state not in TRANSITIONS[self.state]:
            raise QuorumError(f"quorum {self.quorum_id}: {self.state.value} -> {state.value} is not allowed")
        self.state = state
        self.history.append(f"{state.value}: {why}")

    def start(self, now: float) -> None:
        self.formed_at = now
        self.sessions = 1
        self._set_state(QuorumState.TRAINING, "every stage has a member")

    def session_over(self, now: float) -> bool:
        return self.state == QuorumState.TRAINING and now - self.formed_at >= self.session_s

    def renew(self, now: float, alive: Callable[[str], bool]) -> bool:
        """End of a session: renew when everyone is alive and sessions remain, else dissolve."""
        self._set_state(QuorumState.RENEWING, "session ended")
        if self.sessions < self.max_sessions and all(alive(m) for m in self.members.values()):
            self.sessions += 1
            self.formed_at = now
            self._set_state(QuorumState.TRAINING, f"renewed for session {self.sessions}")
            return True
        self._set_state(QuorumState.DISSOLVED, "members gone or session limit reached")
        return False

    def replace_member(self, stage: int, candidates: Sequence[str]) -> str | None:
        """The member of ``stage`` is gone: take the first live replica, or dissolve."""
        taken = set(self.members.values())
        for node in candidates:
            if node not in taken:
                old = self.members.get(stage)
                self.members[stage] = node
                self.history.append(f"stage {stage}: {old} replaced by {node}")
                return node
        if self.state != QuorumState.DISSOLVED:
            self._set_state(QuorumState.DISSOLVED, f"no replica left for stage {stage}")
        return None

    # --- DHT record ----------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        return {"v": RECORD_VERSION, "id": self.quorum_id, "members": {str(k): v for k, v in self.members.items()},
                "speed": self.speed, "session_s": self.session_s, "formed_at": self.formed_at,
                "state": self.state.value, "sessions": self.sessions}

    @classmethod
    def from_record(cls, record: Any) -> Quorum:
        if not isinstance(record, Mapping) or record.get("v") != RECORD_VERSION:
            raise QuorumError(f"quorum record must be a mapping with v={RECORD_VERSION}")
        try:
            members = {int(k): str(v) for k, v in dict(record["members"]).items()}
            quorum = cls(str(record["id"]), members, str(record["speed"]), float(record["session_s"]),
                         float(record["formed_at"]), QuorumState(record["state"]), int(record["sessions"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise QuorumError(f"malformed quorum record: {exc}") from exc
        if 0 not in members or any(k < 0 for k in members) or quorum.session_s <= 0:
            raise QuorumError("quorum record needs a driver (stage 0) and a positive session")
        return quorum


def form_quorum(driver: str, stage_holders: Mapping[int, Sequence[str]], tiers: Mapping[str, str], *,
                now: float, session_s: float) -> Quorum | None:
    """The quorum ``driver`` leads: for each later stage a holder of its speed class (any class
    when none matches). Drivers decide independently, so each takes the holder at its own rank
    among the stage-0 holders: k drivers over k replicas get disjoint pipelines with no
    coordination, and every replica serves about the same number of drivers (which also keeps
    the replicas' DiLoCo rounds in step). None when some stage has no holder at all."""
    speed = speed_class(tiers.get(driver, "T3"))
    drivers = sorted(set(stage_holders.get(0, [])) | {driver})
    rank = drivers.index(driver)
    members = {0: driver}
    for stage in sorted(s for s in stage_holders if s != 0):
        holders = sorted(h for h in stage_holders[stage] if h != driver)
        if not holders:
            return None
        same = [h for h in holders if speed_class(tiers.get(h, "T3")) == speed] or holders
        members[stage] = same[rank % len(same)]
    digest = hashlib.sha256(f"{driver}|{now}".encode()).hexdigest()[:16]
    quorum = Quorum(f"q-{digest}", members, speed, session_s, now)
    quorum.start(now)
    return quorum
