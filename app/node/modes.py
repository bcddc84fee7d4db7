"""Contribution modes: which ways a node can help, proposed from its measurements (seed 001).

Every node contributes something: pipeline (T1-T4 in quorums), async (T5 or unmatched nodes
train a snapshot offline), data (serve genesis shards), verify (staked nodes challenge proofs),
inference (serve requests through a quorum). The policy is a pure function; the volunteer's
toggles override it but cannot switch on a mode the machine cannot do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.node.hardware import SpeedTier

PIPELINE, ASYNC, DATA, VERIFY, INFERENCE = "pipeline", "async", "data", "verify", "inference"
MODES: tuple[str, ...] = (PIPELINE, ASYNC, DATA, VERIFY, INFERENCE)

UNITS_PER_NEURO = 10**6
# Verifying means staking value on a challenge; 100 NEURO matches the governance stake (seed 001)
# so that a verifier has as much at risk as a proposer, and a failed challenge can be paid for.
VERIFY_MIN_STAKE_UNITS = 100 * UNITS_PER_NEURO
# Serving genesis data needs room for the shards plus headroom for checkpoints.
DATA_MIN_FREE_DISK_BYTES = 10 * 2**30
PIPELINE_TIERS = frozenset({SpeedTier.T1, SpeedTier.T2, SpeedTier.T3, SpeedTier.T4})
INFERENCE_TIERS = frozenset({SpeedTier.T1, SpeedTier.T2, SpeedTier.T3})

DESCRIPTIONS = {
    PIPELINE: "Train live with a quorum: hold layers and pass activations to peers.",
    ASYNC: "Train a copy of the model offline and submit updates at the next sync.",
    DATA: "Store and serve the genesis training data to other nodes.",
    VERIFY: "Re-run samples of others' work and challenge false claims (needs stake).",
    INFERENCE: "Answer generation requests through your quorum for a per-token fee.",
}


@dataclass(frozen=True)
class NodeCapabilities:
    tier: SpeedTier
    layers_fit: int  # whole layers of the current architecture in the allowed memory
    fits_full_model: bool  # async mode trains a whole snapshot
    free_disk_bytes: int
    staked_units: int


@dataclass(frozen=True)
class ModePlan:
    proposed: tuple[str, ...]
    available: tuple[str, ...]
    unavailable: tuple[tuple[str, str], ...]  # (mode, why)

    def reason(self, mode: str) -> str | None:
        return dict(self.unavailable).get(mode)


def _unavailable_reasons(caps: NodeCapabilities) -> dict[str, str]:
    reasons: dict[str, str] = {}
    if caps.tier not in PIPELINE_TIERS:
        reasons[PIPELINE] = (f"this computer is too slow to train live with others (speed tier {caps.tier.value}; "
                            "live training needs tier T1–T4)")
    elif caps.layers_fit < 1:
        reasons[PIPELINE] = "not enough memory allowed for one layer; raise the memory limit"
    if not caps.fits_full_model:
        reasons[ASYNC] = "the whole model does not fit in the memory allowed"
    if caps.free_disk_bytes < DATA_MIN_FREE_DISK_BYTES:
        need = DATA_MIN_FREE_DISK_BYTES // 2**30
        reasons[DATA] = f"needs {need} GB of free disk (has {caps.free_disk_bytes / 2**30:.1f} GB)"
    if caps.staked_units < VERIFY_MIN_STAKE_UNITS:
        reasons[VERIFY] = f"needs {VERIFY_MIN_STAKE_UNITS // UNITS_PER_NEURO} NEURO staked"
    if caps.tier not in INFERENCE_TIERS:
        reasons[INFERENCE] = (f"this computer is too slow to answer requests quickly (speed tier {caps.tier.value}; "
                              "needs tier T1–T3)")
    elif PIPELINE in reasons:
        reasons[INFERENCE] = "needs live training (pipeline) on: requests run through the computers that train together"
    return reasons


def propose_modes(caps: NodeCapabilities) -> ModePlan:
    """What this node should do by default, and why the rest is unavailable."""
    reasons = _unavailable_reasons(caps)
    available = tuple(m for m in MODES if m not in reasons)
    proposed: list[str] = []
    if PIPELINE in available:
        proposed.append(PIPELINE)
    elif ASYNC in available:
        proposed.append(ASYNC)  # T5 or too little memory for a layer: train offline instead
    # Data, verify and inference are proposed whenever possible: they cost little beside training.
    proposed += [m for m in (DATA, VERIFY, INFERENCE) if m in available]
    return ModePlan(tuple(proposed), available, tuple(sorted(reasons.items())))


class ModeNotAvailable(ValueError):
    """The volunteer switched on a mode this machine cannot do; the message says why."""


def apply_toggles(plan: ModePlan, toggles: Mapping[str, bool]) -> tuple[str, ...]:
    """Active modes: the proposal with the volunteer's on/off switches applied."""
    unknown = sorted(set(toggles) - set(MODES))
    if unknown:
        raise ModeNotAvailable(f"unknown mode(s): {', '.join(unknown)}")
    active = set(plan.proposed)
    for mode, on in toggles.items():
        if on and mode not in plan.available:
            raise ModeNotAvailable(f"{mode} is not available: {plan.reason(mode)}")
        (active.add if on else active.discard)(mode)
    return tuple(m for m in MODES if m in active)


def explicit_modes(plan: ModePlan, modes: tuple[str, ...]) -> tuple[str, ...]:
    """``--modes a,b``: exactly these modes, each of which must be available."""
    return apply_toggles(plan, {m: (m in modes) for m in MODES})
