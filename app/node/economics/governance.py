"""Vocabulary governance (seed 001): the proposal state machine as pure functions.

    PROPOSED --discussion_ms--> VOTING --voting_ms--> APPROVED --implementation_ms--> IMPLEMENTED
                                                 \\-> REJECTED  (approval < 66 %)
                                                 \\-> NO_QUORUM (votes < 30 % of staked supply)

A proposal locks ``proposal_stake`` (100 NEURO) from its author. Votes are signed records, valid
only inside the voting window, one per account and proposal; at the end of voting each vote is
weighted by the voter's stake *at that moment* (a snapshot at tally time, so moving stake to a
second account after voting cannot count it twice). The author's stake comes back when the vote
reached quorum; without quorum it is burned, which prices out spam proposals nobody cares about.
An approved proposal's merges take effect at ``implementation_at`` on every node: the tokenizer
applies them when its clock passes that instant (``merges_due``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from app.node.economics.constants import EconomicsConfig


class Phase(enum.Enum):
    DISCUSSION = "discussion"
    VOTING = "voting"
    APPROVED = "approved"
    IMPLEMENTED = "implemented"
    REJECTED = "rejected"
    NO_QUORUM = "no_quorum"


class VoteRefused(ValueError):
    """A vote that the state machine does not accept; ``reason`` is shown to the voter."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"vote refused: {reason}")
        self.reason = reason


@dataclass
class Proposal:
    """A vocabulary proposal as the ledger tracks it; ``phase`` changes only through ``advance``."""

    proposal_id: str
    author: str
    title: str
    merges: list[tuple[bytes, bytes]]  # token bytes, as NeuroTokenizer.apply_merges takes them
    created_ms: int
    votes: dict[str, bool] = field(default_factory=dict)
    phase: Phase = Phase.DISCUSSION
    approve_weight: int = 0
    reject_weight: int = 0
    total_staked: int = 0

    def voting_opens(self, config: EconomicsConfig) -> int:
        return self.created_ms + config.discussion_ms

    def voting_closes(self, config: EconomicsConfig) -> int:
        return self.voting_opens(config) + config.voting_ms

    def implementation_at(self, config: EconomicsConfig) -> int:
        return self.voting_closes(config) + config.implementation_ms


def check_vote(proposal: Proposal, voter: str, voter_stake: int, at_ms: int, config: EconomicsConfig) -> None:
    """Raises ``VoteRefused`` for votes outside the window, double votes and voters without stake."""
    if at_ms < proposal.voting_opens(config):
        raise VoteRefused("voting has not opened yet (proposal is in discussion)")
    if at_ms >= proposal.voting_closes(config):
        raise VoteRefused("voting has closed")
    if voter in proposal.votes:
        raise VoteRefused("this account already voted on the proposal")
    if voter_stake <= 0:
        raise VoteRefused("only accounts with stake can vote")


@dataclass(frozen=True)
class Tally:
    approve: int
    reject: int
    total_staked: int
    outcome: Phase


def tally(votes: Mapping[str, bool], stakes: Mapping[str, int], total_staked: int,
          config: EconomicsConfig) -> Tally:
    """Counts stake-weighted votes; quorum and approval compared in integers (no float drift)."""
    approve = sum(stakes.get(voter, 0) for voter, yes in votes.items() if yes)
    reject = sum(stakes.get(voter, 0) for voter, yes in votes.items() if not yes)
    cast = approve + reject
    quorum_ppm = round(config.quorum_threshold * 1_000_000)
    approval_ppm = round(config.approval_threshold * 1_000_000)
    if total_staked <= 0 or cast * 1_000_000 < quorum_ppm * total_staked or cast == 0:
        outcome = Phase.NO_QUORUM
    elif approve * 1_000_000 >= approval_ppm * cast:
        outcome = Phase.APPROVED
    else:
        outcome = Phase.REJECTED
    return Tally(approve, reject, total_staked, outcome)


def advance(proposal: Proposal, now_ms: int, config: EconomicsConfig,
            stakes: Mapping[str, int] | None = None, total_staked: int = 0) -> Phase:
    """Moves ``proposal`` to the phase ``now_ms`` implies; tallies once when voting closes.

    ``stakes``/``total_staked`` are the snapshot at the close and are needed only for the
    VOTING -> outcome transition; the caller (the ledger) passes them at that instant.
    """
    if proposal.phase is Phase.DISCUSSION and now_ms >= proposal.voting_opens(config):
        proposal.phase = Phase.VOTING
    if proposal.phase is Phase.VOTING and now_ms >= proposal.voting_closes(config):
        result = tally(proposal.votes, stakes or {}, total_staked, config)
        proposal.approve_weight, proposal.reject_weight = result.approve, result.reject
        proposal.total_staked = result.total_staked
        proposal.phase = result.outcome
    if proposal.phase is Phase.APPROVED and now_ms >= proposal.implementation_at(config):
        proposal.phase = Phase.IMPLEMENTED
    return proposal.phase


FINAL_PHASES = frozenset({Phase.IMPLEMENTED, Phase.REJECTED, Phase.NO_QUORUM})


def ready_proposals(proposals: Iterable[Proposal], done: set[str]) -> list[Proposal]:
    """Implemented proposals not in ``done``, in implementation order, stopping at the first
    proposal (done or not) that is not final yet: a later one must not overtake it, or two nodes
    of which one has not heard of an earlier vote would apply merges in different orders."""
    ready = []
    for p in sorted(proposals, key=lambda p: (p.created_ms, p.proposal_id)):
        if p.phase not in FINAL_PHASES:
            break
        if p.phase is Phase.IMPLEMENTED and p.proposal_id not in done:
            ready.append(p)
    return ready


def merges_due(proposals: Iterable[Proposal], applied: set[str]) -> list[tuple[str, list[tuple[bytes, bytes]]]]:
    """The merges of :func:`ready_proposals`, as (proposal id, merges) in implementation order.

    The tokenizer calls ``apply_merges`` with each list and records the proposal id in
    ``applied``; every node applies the same lists in the same order, so vocabularies agree.
    """
    return [(p.proposal_id, list(p.merges)) for p in ready_proposals(proposals, applied)]
