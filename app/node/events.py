"""Typed, immutable events the engine publishes, and the commands it accepts.

Events are frozen dataclasses so a subscriber on another thread can keep them without copying.
The UI turns each into a Qt signal (queued connection); headless mode prints them as log lines
or, with ``--json-events``, as one JSON object per line (:func:`event_to_json`).
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from app.node.config import UsageCaps


class NodeState(str, enum.Enum):
    """The node's lifecycle. Changed only through ``NodeEngine._set_state``."""

    STOPPED = "stopped"
    STARTING = "starting"
    MEASURING = "measuring"
    JOINING = "joining"
    TRAINING = "training"
    PAUSED = "paused"
    STOPPING = "stopping"
    ERROR = "error"


# Which state may follow which; anything else is a programming error caught in _set_state.
STATE_TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    NodeState.STOPPED: frozenset({NodeState.STARTING}),
    NodeState.STARTING: frozenset({NodeState.MEASURING, NodeState.JOINING, NodeState.STOPPING, NodeState.ERROR}),
    NodeState.MEASURING: frozenset({NodeState.JOINING, NodeState.STOPPING, NodeState.ERROR}),
    NodeState.JOINING: frozenset({NodeState.TRAINING, NodeState.PAUSED, NodeState.STOPPING, NodeState.ERROR}),
    NodeState.TRAINING: frozenset({NodeState.PAUSED, NodeState.JOINING, NodeState.STOPPING, NodeState.ERROR}),
    NodeState.PAUSED: frozenset({NodeState.TRAINING, NodeState.JOINING, NodeState.STOPPING, NodeState.ERROR}),
    NodeState.STOPPING: frozenset({NodeState.STOPPED, NodeState.ERROR}),
    NodeState.ERROR: frozenset({NodeState.STOPPING, NodeState.STOPPED, NodeState.STARTING}),
}


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class Event:
    """Base of all events; ``kind`` names the event in JSON and logs."""

    kind: ClassVar[str] = "event"
    timestamp: float = field(default_factory=_now, kw_only=True)

    def describe(self) -> str:
        """One human line for headless logs."""
        body = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name != "timestamp")
        return f"{self.kind}: {body}"


@dataclass(frozen=True)
class StatusChanged(Event):
    kind: ClassVar[str] = "status"
    state: NodeState
    detail: str = ""

    def describe(self) -> str:
        return f"status: {self.state.value}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class HardwareMeasured(Event):
    kind: ClassVar[str] = "hardware"
    device: str  # "cuda", "mps" or "cpu"
    device_name: str
    memory_bytes: int
    ms_per_layer: float
    tier: str  # "T1" .. "T5"
    cached: bool = False


@dataclass(frozen=True)
class ModesChanged(Event):
    kind: ClassVar[str] = "modes"
    active: tuple[str, ...]
    proposed: tuple[str, ...]
    unavailable: tuple[tuple[str, str], ...] = ()  # (mode, reason)


@dataclass(frozen=True)
class LayersAssigned(Event):
    kind: ClassVar[str] = "layers"
    first_layer: int
    last_layer: int  # exclusive
    roles: tuple[str, ...]  # "driver", "worker", "validator"
    architecture_version: int
    total_layers: int
    hidden: int
    parameters: int
    block_type: str = "transformer"  # ModelArchitecture.block_type: "transformer" or "inl"
    memory_savers: tuple[str, ...] = ()  # turned on because the layers would not fit otherwise


@dataclass(frozen=True)
class StepDone(Event):
    kind: ClassVar[str] = "step"
    step: int
    loss: float
    tokens_per_s: float
    tokens_total: int
    inner_step: int = 0
    inner_steps_per_sync: int = 0


@dataclass(frozen=True)
class ActivityChanged(Event):
    """What the node is doing now, in words ("waiting for quorum", "averaging", ...)."""

    kind: ClassVar[str] = "activity"
    activity: str


@dataclass(frozen=True)
class PeerJoined(Event):
    kind: ClassVar[str] = "peer_joined"
    node_id: str
    address: str
    tier: str = ""
    layers: tuple[int, int] = (0, 0)
    latency_ms: float = 0.0


@dataclass(frozen=True)
class PeerLeft(Event):
    kind: ClassVar[str] = "peer_left"
    node_id: str


@dataclass(frozen=True)
class NetworkChanged(Event):
    kind: ClassVar[str] = "network"
    reachable: bool
    relay: str = ""
    peers: int = 0
    phase: str = "genesis"
    replicas_per_layer: tuple[int, ...] = ()


@dataclass(frozen=True)
class QuorumChanged(Event):
    kind: ClassVar[str] = "quorum"
    quorum_id: str
    state: str
    members: tuple[str, ...] = ()
    speed_class: str = ""


@dataclass(frozen=True)
class ProofAccepted(Event):
    kind: ClassVar[str] = "proof"
    proof_kind: str
    epoch: int
    reward_units: int  # micro-NEURO


@dataclass(frozen=True)
class BalanceChanged(Event):
    kind: ClassVar[str] = "balance"
    address: str
    available_units: int
    staked_units: int
    pending_units: int


@dataclass(frozen=True)
class ProposalChanged(Event):
    kind: ClassVar[str] = "proposal"
    proposal_id: str
    phase: str
    yes_weight: int = 0
    no_weight: int = 0
    phase_ends_at: float = 0.0


@dataclass(frozen=True)
class VocabularyChanged(Event):
    """The vocabulary the node trains with (at start, then at every activation of voted merges)."""

    kind: ClassVar[str] = "vocabulary"
    vocab_size: int
    merges: int  # voted merges in force
    version: str  # "<size>-<hash16>", the tag stage requests carry
    applied: tuple[str, ...] = ()  # proposal ids whose merges are in force, in activation order


@dataclass(frozen=True)
class UpgradeAvailable(Event):
    kind: ClassVar[str] = "upgrade"
    current_version: int
    candidate_version: int
    current_parameters: int
    candidate_parameters: int
    layers_held_after: int = 0  # what the upgrade means for this computer (migration.node_impact)
    memory_needed_bytes: int = 0
    memory_budget_bytes: int = 0
    fits_here: bool = True


@dataclass(frozen=True)
class MigrationProgress(Event):
    kind: ClassVar[str] = "migration"
    phase: str
    fraction: float
    message: str = ""


@dataclass(frozen=True)
class LogLine(Event):
    kind: ClassVar[str] = "log"
    level: str
    message: str

    def describe(self) -> str:
        return self.message


@dataclass(frozen=True)
class ErrorOccurred(Event):
    kind: ClassVar[str] = "error"
    message: str
    fatal: bool = False

    def describe(self) -> str:
        return ("fatal error: " if self.fatal else "error: ") + self.message


@dataclass(frozen=True)
class UsageCapsChanged(Event):
    """The caps the engine enforces from now on: ``caps`` as set, ``threads`` the torch thread
    count they resolve to, ``share`` the duty cycle applied (gpu_share on cuda/mps, else
    cpu_share) on ``device``."""

    kind: ClassVar[str] = "usage_caps"
    caps: UsageCaps
    threads: int
    share: float
    device: str

    def describe(self) -> str:
        c = self.caps
        return (f"usage caps: {self.threads} threads, {self.share:.0%} of {self.device} time, "
                f"upload {_rate(c.upload_bytes_per_s)}, download {_rate(c.download_bytes_per_s)}")


def _rate(bytes_per_s: int | None) -> str:
    return "unlimited" if bytes_per_s is None else f"{bytes_per_s / 1024:.0f} KiB/s"


@dataclass(frozen=True)
class RunFinished(Event):
    """The node's main job ended on its own (``--max-steps`` reached): headless exits then."""

    kind: ClassVar[str] = "finished"
    steps: int
    exit_code: int = 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    return value


def event_to_json(event: Event) -> str:
    """One compact JSON object: ``{"event": kind, "timestamp": ..., <fields>}``."""
    payload = {"event": event.kind, **{k: _jsonable(v) for k, v in asdict(event).items()}}
    return json.dumps(payload, separators=(",", ":"), sort_keys=False)


# --- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """Base of commands posted to the engine (from the UI, the CLI or tests)."""

    name: ClassVar[str] = "command"


@dataclass(frozen=True)
class Pause(Command):
    name: ClassVar[str] = "pause"
    until: float | None = None  # epoch seconds; None = until Resume


@dataclass(frozen=True)
class Resume(Command):
    name: ClassVar[str] = "resume"


@dataclass(frozen=True)
class FinishStepThenStop(Command):
    """Unlike Pause: complete the step in flight, checkpoint, then stop the node."""

    name: ClassVar[str] = "finish_and_stop"


@dataclass(frozen=True)
class SetModes(Command):
    name: ClassVar[str] = "set_modes"
    modes: tuple[str, ...]


@dataclass(frozen=True)
class SetUsageCaps(Command):
    """Apply these caps now (the app sends the in-use set when the volunteer touches the computer
    and the idle set when they leave); they last until the next SetUsageCaps or a restart."""

    name: ClassVar[str] = "set_usage_caps"
    caps: UsageCaps


@dataclass(frozen=True)
class Remeasure(Command):
    name: ClassVar[str] = "remeasure"


@dataclass(frozen=True)
class Query(Command):
    """Ask the node for a snapshot (``what``: "status", "peers", "wallet", "proposals", ...)."""

    name: ClassVar[str] = "query"
    what: str
    args: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class WalletCommand(Command):
    """Value-moving request; ``action`` is send / stake / unstake / propose / vote."""

    name: ClassVar[str] = "wallet"
    action: str
    args: tuple[tuple[str, Any], ...] = ()


# --- faults (#15): checkpoints that never destroy the good copy ---------------------------------


@dataclass(frozen=True)
class CheckpointSetAside(Event):
    """A checkpoint failed its content hash: renamed to ``now_at`` (kept for diagnostics) and
    ``loaded`` (the verified older copy, now in its place) resumed the node instead."""

    kind: ClassVar[str] = "checkpoint_set_aside"
    original: str
    now_at: str
    reason: str
    loaded: str

    def describe(self) -> str:
        return (f"checkpoint {self.original} is corrupted ({self.reason}); set aside as {self.now_at}, "
                f"resumed from the verified copy {self.loaded}")


@dataclass(frozen=True)
class CheckpointDecisionNeeded(Event):
    """Neither checkpoint copy verifies and no live replica has this stage: the node waits for the
    volunteer's ``ResolveCorruptCheckpoint`` (``choices``) before doing anything with the files."""

    kind: ClassVar[str] = "checkpoint_decision"
    reason: str
    choices: tuple[str, ...] = ("restart", "stop")

    def describe(self) -> str:
        return (f"both checkpoints are unusable ({self.reason}); waiting for the volunteer to choose "
                f"{' or '.join(self.choices)}")


@dataclass(frozen=True)
class CheckpointRecovered(Event):
    """How a node whose checkpoints were all unusable went on: ``how`` is "replica" (weights from a
    live replica) or "restart" (the volunteer or ``--on-corrupt-checkpoint restart`` chose a fresh
    start); ``set_aside`` lists where the unusable files now lie."""

    kind: ClassVar[str] = "checkpoint_recovered"
    how: str
    detail: str
    set_aside: tuple[str, ...] = ()

    def describe(self) -> str:
        kept = f"; unusable files kept as {', '.join(self.set_aside)}" if self.set_aside else ""
        return f"checkpoints unusable: {self.detail}{kept}"


@dataclass(frozen=True)
class ResolveCorruptCheckpoint(Command):
    """The volunteer's answer to ``CheckpointDecisionNeeded``: "restart" or "stop"."""

    name: ClassVar[str] = "resolve_corrupt_checkpoint"
    choice: str


@dataclass(frozen=True)
class ProofRefused(Event):
    """One of this node's own proofs was refused (at its ledger's door or by a state rule) or
    slashed; ``reason`` is the ledger's own words."""

    kind: ClassVar[str] = "proof_refused"
    proof_kind: str
    epoch: int
    reason: str


@dataclass(frozen=True)
class EarningsChanged(Event):
    """What this node has earned, from its ledger (micro-NEURO): settled over its lifetime and
    since this run started, per contribution mode, plus what is still pending in a challenge
    window and how many of its proofs were refused or slashed."""

    kind: ClassVar[str] = "earnings"
    lifetime_units: int
    since_start_units: int
    pending_units: int
    by_mode: tuple[tuple[str, int], ...]  # (mode, settled since start): pipeline, async, data, verify, ...
    refused: int
    last_refusal: str = ""


# --- trying the model (#17): generation for the app's "Try the model" page ----------------------


@dataclass(frozen=True)
class Generate(Command):
    """Generate text with the network's model (runtime/generation_service.py): on this node when it
    holds every layer (nothing is paid), else through the network, paid from this node's wallet.
    The text streams as ``TextGenerated`` events with this ``request_id``; the result is a dict
    (text, tokens, cost_units, where, tokens_per_s)."""

    name: ClassVar[str] = "generate"
    prompt: str
    max_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 0.95
    request_id: str = ""


@dataclass(frozen=True)
class QuoteGeneration(Command):
    """The price of ``max_tokens`` tokens before anything is sent: asked of the computers that
    would serve it now (nothing is charged); the result is a dict (where, price per token, most it
    can cost)."""

    name: ClassVar[str] = "quote_generation"
    max_tokens: int = 64


@dataclass(frozen=True)
class TextGenerated(Event):
    """A piece of generated text (``index``: the token that completed it), as soon as it exists."""

    kind: ClassVar[str] = "generated_text"
    request_id: str
    index: int
    text: str


# --- reachability (#18): the node's self-test (p2p/reachability.py) -------------------------------


@dataclass(frozen=True)
class ReachabilityTested(Event):
    """How other computers can connect to this node, as the last self-test found (at start and
    whenever the volunteer re-runs it). ``verdict``: not_listening, this_computer, local_network,
    direct, upnp, relay or unreachable."""

    kind: ClassVar[str] = "reachability"
    verdict: str
    address: str = ""  # what peers dial
    observed: str = ""  # the host a tracker saw this node come from
    relay: str = ""
    port: int = 0  # the port to forward on the router
    lan_peers: int = 0  # computers on this network that found each other with this one
    trackers_answered: int = 0


@dataclass(frozen=True)
class HolePunched(Event):
    """How an attempt to reach a relayed peer directly ended (p2p/holepunch.py): ``direct`` with
    the address the direct path runs to, or not, with ``reason`` (the last attempt's); ``seconds``
    from the first contact to the first call answered directly (or to giving up)."""

    kind: ClassVar[str] = "hole_punch"
    peer: str
    direct: bool
    attempts: int
    seconds: float
    address: str = ""
    reason: str = ""

    def describe(self) -> str:
        if self.direct:
            return (f"direct connection to {self.peer[:16]} at {self.address} after {self.attempts} "
                    f"attempt(s), {self.seconds:.2f} s; it no longer goes through the relay")
        return (f"no direct connection to {self.peer[:16]} after {self.attempts} attempt(s): {self.reason}; "
                f"it stays on the relay")
