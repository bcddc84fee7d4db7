"""Timed events of the ledger: epoch settlement (rewards, slashes), unbonding, governance phases.

Settlement of an epoch happens once its challenge window has passed (optimistic verification,
seed 001): every proof of the epoch is either paid or, if staked verifiers proved it wrong,
refused and its author slashed. The rules, all in integers:

Every verdict, pass or fail, locked a bond (``handlers._challenge``).

Each verdict names the committed step its checker re-ran; verdicts count per step, since a
pass on one step says nothing about another.

* upheld: for some step, at least ``challenge_confirmations`` (2) distinct staked checkers said
  "fail" and more said "fail" than "pass" on that step. The prover loses ``slash_multiplier x cheat_penalty`` (seed 001's
  2x), taken from stake, then unbonding coins, then available balance, capped at what it holds;
  ``reporter_share`` of it is split among the failing checkers (their bonds come back), the rest
  and any rounding remainder is burned. Checkers who said "pass" on an upheld step lose their
  bonds (burned); every other bond comes back.
* refuted: not upheld, and a "fail" whose step at least as many staked checkers found right:
  that checker loses its bond, half to the prover, half burned.
* otherwise (too few confirmations, nobody disagreed): bonds come back and the proof is paid.
"""

from __future__ import annotations

import heapq

from app.crypto.keys import address_from_public_key
from app.node.economics import governance, legacy, rewards
from app.node.economics.state import PPM, LedgerState, ProofState

DAY_MS = 86_400_000


def run_events(state: LedgerState, now_ms: int) -> None:
    """Fires, in (due, rank, key) order, every queued event due at or before ``now_ms``."""
    while state._events and state._events[0][0] <= now_ms:
        due, _rank, action, key = heapq.heappop(state._events)
        if action == "settle":
            settle_epoch(state, int(key), due)
        elif action == "unbond":
            address, amount, _rid = key.split(":")
            _release_unbonding(state, address, int(amount), due)
        elif action == "governance":
            _advance_proposal(state, key.split(":", 1)[1], due)


def settle_epoch(state: LedgerState, epoch: int, at_ms: int) -> None:
    config = state.config
    payable: dict[str, int] = {}
    for rid in state.epoch_proofs.get(epoch, []):
        proof = state.proofs[rid]
        proof.settled = True
        owner = state.account(address_from_public_key(proof.record.author))
        owner.pending_rewards -= proof.reward
        if legacy.is_v1(proof.record):
            if _settle_v1(state, rid, proof, at_ms):
                payable[rid] = proof.reward
            continue
        upheld = proof.upheld_steps(config.challenge_confirmations)
        if upheld:
            _slash(state, rid, proof, upheld, at_ms)
            continue
        refuted = {c: b for c, b in proof.fails.items() if proof.refuted(c)}
        _forfeit_bonds(state, rid, proof, refuted, at_ms)
        _return_bonds(state, rid, {c: b for c, b in proof.fails.items() if c not in refuted}, at_ms)
        _return_bonds(state, rid, proof.passes, at_ms)
        payable[rid] = proof.reward
    active = {state.proofs[rid].record.author for rid in payable}
    capped = rewards.scale_to_cap(payable, rewards.epoch_cap(len(active), config))
    day = epoch * config.epoch_ms // DAY_MS
    for rid in sorted(capped):
        record = state.proofs[rid].record
        address = address_from_public_key(record.author)
        minted_today = state.minted_by_day.get((address, day), 0)
        amount = rewards.clip_daily(capped[rid], minted_today, config)
        state.minted_by_day[(address, day)] = minted_today + amount
        state.account(address).available += amount
        state.minted += amount
        state.note(address, at_ms, "reward", amount, rid, record.body["proof_kind"])


def _take(state: LedgerState, address: str, amount: int) -> int:
    """Removes up to ``amount`` from stake, then unbonding, then available; returns what it took."""
    account = state.account(address)
    taken = 0
    for bucket in ("staked", "unbonding", "available"):
        part = min(getattr(account, bucket), amount - taken)
        setattr(account, bucket, getattr(account, bucket) - part)
        taken += part
    return taken


def _slash(state: LedgerState, rid: str, proof: ProofState, upheld: set[int], at_ms: int) -> None:
    config = state.config
    cheater = address_from_public_key(proof.record.author)
    taken = _take(state, cheater, config.slash_multiplier * config.cheat_penalty)
    steps = ", ".join(str(s) for s in sorted(upheld))
    state.statuses[rid] = ("slashed", f"verifiers re-ran committed step {steps} and found the claimed work wrong")
    state.note(cheater, at_ms, "slash", -taken, rid, f"failed verification of step {steps}")
    checkers = sorted(c for c in proof.fails if proof.steps[c] in upheld)
    _return_bonds(state, rid, {c: b for c, b in proof.fails.items() if proof.steps[c] not in upheld}, at_ms)
    share = taken * round(config.reporter_share * PPM) // PPM // len(checkers)
    for checker in checkers:
        account = state.account(checker)
        account.locked -= proof.fails[checker]
        account.available += proof.fails[checker] + share
        state.note(checker, at_ms, "slash_reward", proof.fails[checker] + share, rid, "bond back + reward")
    state.burned += taken - share * len(checkers)
    _return_bonds(state, rid, {c: b for c, b in proof.passes.items() if proof.steps[c] not in upheld}, at_ms)
    for checker in sorted(c for c in proof.passes if proof.steps[c] in upheld):  # vouched for wrong work
        bond = proof.passes[checker]
        state.account(checker).locked -= bond
        state.burned += bond
        state.note(checker, at_ms, "check_lost", 0, rid, f"passed a proof that was slashed, bond {bond} burned")


def _settle_v1(state: LedgerState, rid: str, proof: ProofState, at_ms: int) -> bool:
    """A version-1 proof settles as the previous release settled it (``legacy.py``): slashed if
    at least ``V1_CHALLENGE_CONFIRMATIONS`` checkers failed it and fails outnumber passes; the
    fails forfeit their bonds if passes are at least as many; else bonds come back. True: paid."""
    fails, passes = len(proof.fails), len(proof.passes)
    if fails >= legacy.V1_CHALLENGE_CONFIRMATIONS and fails > passes:
        config = state.config
        cheater = address_from_public_key(proof.record.author)
        taken = _take(state, cheater, config.slash_multiplier * config.cheat_penalty)
        state.statuses[rid] = ("slashed", "a spot-check found the claimed work wrong")
        state.note(cheater, at_ms, "slash", -taken, rid, "failed spot-check")
        checkers = sorted(proof.fails)
        share = taken * round(config.reporter_share * PPM) // PPM // len(checkers)
        for checker in checkers:
            account = state.account(checker)
            account.locked -= proof.fails[checker]
            account.available += proof.fails[checker] + share
            state.note(checker, at_ms, "slash_reward", proof.fails[checker] + share, rid, "bond back + reward")
        state.burned += taken - share * len(checkers)
        return False
    if fails and passes >= fails:
        _forfeit_bonds(state, rid, proof, dict(proof.fails), at_ms)
    else:
        _return_bonds(state, rid, proof.fails, at_ms)
    return True


def _forfeit_bonds(state: LedgerState, rid: str, proof: ProofState, refuted: dict[str, int], at_ms: int) -> None:
    prover = address_from_public_key(proof.record.author)
    for checker in sorted(refuted):
        bond = refuted[checker]
        state.account(checker).locked -= bond
        to_prover = bond // 2
        state.account(prover).available += to_prover
        state.burned += bond - to_prover
        state.note(checker, at_ms, "challenge_lost", 0, rid, f"frivolous challenge, bond {bond} forfeited")
        state.note(prover, at_ms, "challenge_compensation", to_prover, rid)


def _return_bonds(state: LedgerState, rid: str, bonds: dict[str, int], at_ms: int) -> None:
    for checker in sorted(bonds):
        account = state.account(checker)
        account.locked -= bonds[checker]
        account.available += bonds[checker]
        state.note(checker, at_ms, "bond_returned", bonds[checker], rid)


def _release_unbonding(state: LedgerState, address: str, amount: int, at_ms: int) -> None:
    account = state.account(address)
    released = min(amount, account.unbonding)  # a slash may have taken part of it
    account.unbonding -= released
    account.available += released
    state.note(address, at_ms, "unbonded", released, "")


def _advance_proposal(state: LedgerState, proposal_id: str, at_ms: int) -> None:
    config = state.config
    proposal = state.proposals[proposal_id]
    before = proposal.phase
    stakes = {voter: state.account(voter).staked for voter in proposal.votes}
    after = governance.advance(proposal, at_ms, config, stakes, state.total_staked())
    if before is not governance.Phase.VOTING or after is governance.Phase.VOTING:
        return
    author = state.account(proposal.author)
    author.locked -= config.proposal_stake
    if after is governance.Phase.NO_QUORUM:
        state.burned += config.proposal_stake
        state.note(proposal.author, at_ms, "proposal_burned", 0, proposal_id, "no quorum: stake burned")
    else:
        author.available += config.proposal_stake
        state.note(proposal.author, at_ms, "proposal_returned", config.proposal_stake, proposal_id)
