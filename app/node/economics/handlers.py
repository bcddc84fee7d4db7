"""How each kind of record changes the ledger state. Each handler either applies fully or
records a rejection with its reason and changes nothing (checks first, then moves)."""

from __future__ import annotations

import bisect
from typing import Any

from app.crypto.keys import address_from_public_key
from app.node.economics import governance, legacy, ponw, rewards
from app.node.economics.records import Record
from app.node.economics.state import FEE_POOL, PPM, LedgerState, ProofState


class Refused(Exception):
    """Internal: a state rule refused the record; the message becomes its status reason."""


def apply_record(state: LedgerState, record: Record, at_ms: int) -> None:
    """Applies one record at canonical time ``at_ms``; sets its status to applied or rejected."""
    handler = _HANDLERS[record.kind]
    try:
        handler(state, record, at_ms)
    except Refused as exc:
        state.statuses[record.record_id] = ("rejected", str(exc))
    except ponw.ProofRejected as exc:
        state.statuses[record.record_id] = ("rejected", exc.reason)
    except governance.VoteRefused as exc:
        state.statuses[record.record_id] = ("rejected", exc.reason)
    except legacy.LegacyRefused as exc:
        state.statuses[record.record_id] = ("rejected", str(exc))
    else:
        state.statuses[record.record_id] = ("applied", "")


def _author(record: Record) -> str:
    return address_from_public_key(record.author)


def _genesis(state: LedgerState, record: Record, at_ms: int) -> None:
    if record.author.hex() != state.config.genesis_public_key:
        raise Refused("genesis signed by a key other than the configured genesis key")
    if state.genesis_done:
        raise Refused("genesis already applied")
    state.genesis_done = True
    for address, amount in record.body["allocations"]:
        state.account(address).available += amount
        state.minted += amount
        state.note(address, at_ms, "genesis", amount, record.record_id)


def _transfer(state: LedgerState, record: Record, at_ms: int) -> None:
    body = record.body
    sender = state.account(_author(record))
    amount, fee = body["amount"], body["fee"]
    if fee < state.config.min_transfer_fee:
        raise Refused(f"fee below the minimum of {state.config.min_transfer_fee} micro-NEURO")
    if sender.available < amount + fee:
        raise Refused("insufficient available balance for amount plus fee")
    sender.available -= amount + fee
    state.account(body["to"]).available += amount
    burned = fee * round(state.config.fee_burn_share * PPM) // PPM
    state.burned += burned
    state.account(FEE_POOL).available += fee - burned
    rid = record.record_id
    state.note(_author(record), at_ms, "send", -(amount + fee), rid, f"to {body['to']} fee {fee} {body['memo']}")
    state.note(body["to"], at_ms, "receive", amount, rid, f"from {_author(record)} {body['memo']}")


def _stake(state: LedgerState, record: Record, at_ms: int) -> None:
    account = state.account(_author(record))
    amount = record.body["amount"]
    if account.available < amount:
        raise Refused("insufficient available balance to stake")
    account.available -= amount
    account.staked += amount
    state.note(_author(record), at_ms, "stake", -amount, record.record_id)


def _unstake(state: LedgerState, record: Record, at_ms: int) -> None:
    """Unstaked coins wait one challenge window (still slashable) so a cheat cannot run first."""
    account = state.account(_author(record))
    amount = record.body["amount"]
    if account.staked < amount:
        raise Refused("cannot unstake more than is staked")
    account.staked -= amount
    account.unbonding += amount
    key = f"{_author(record)}:{amount}:{record.record_id}"
    state.schedule(at_ms + state.config.challenge_window_ms, 1, "unbond", key)
    state.note(_author(record), at_ms, "unstake", 0, record.record_id, f"unbonding {amount}")


def _proof(state: LedgerState, record: Record, at_ms: int) -> None:
    config = state.config
    v1 = legacy.is_v1(record)
    if v1:
        legacy.check_still_open(state.v2_proof_applied)
    ponw.check_proof(record, config)
    body = record.body
    address = _author(record)
    epoch = body["epoch"]
    window = max(3_600_000 // config.epoch_ms, 1)
    accepted = state.proof_epochs.setdefault(address, [])
    recent = bisect.bisect_right(accepted, epoch) - bisect.bisect_right(accepted, epoch - window)
    if recent >= config.max_proofs_per_hour:
        raise Refused(f"more than {config.max_proofs_per_hour} proofs in one hour")
    if not v1 and body["proof_kind"] in ("training", "inference"):
        _claim_span(state, address, body["work_start_ms"], body["work_end_ms"])
    if not v1 and body["proof_kind"] == "data":
        receipted = sum(state.receipts.get((address, epoch), {}).values())
        if body["samples"] > receipted:
            raise Refused(f"claims {body['samples']} samples served, but receivers signed receipts for "
                          f"{receipted} in epoch {epoch}")
    if not v1 and body["proof_kind"] == "async":
        merged = merged_layer_batches(state, address, epoch)
        if body["batches"] * body["layers"] > merged:
            raise Refused(f"claims {body['batches']} batches on {body['layers']} layers merged, but the holders "
                          f"that merged it signed for {merged} layer-batches in epoch {epoch}")
    if not v1 and body["proof_kind"] == "verification":
        done = state.checks_by_epoch.get((address, epoch), 0)
        if body["samples"] > done:
            raise Refused(f"claims {body['samples']} checks, but this verifier's ledger shows {done} in epoch {epoch}")
    account = state.account(address)
    reward = rewards.proof_reward(body, account.staked, config)
    bisect.insort(accepted, epoch)
    account.pending_rewards += reward
    state.proofs[record.record_id] = ProofState(record=record, reward=reward)
    state.epoch_proofs.setdefault(epoch, []).append(record.record_id)
    settle_at = (epoch + 1) * config.epoch_ms + config.challenge_window_ms
    state.schedule(settle_at, 0, "settle", str(epoch))
    state.note(address, at_ms, "proof", 0, record.record_id, f"{body['proof_kind']} pending {reward}")
    state.v2_proof_applied = state.v2_proof_applied or not v1


def _claim_span(state: LedgerState, address: str, start: int, end: int) -> None:
    """Refuses a work span that overlaps one this node already claimed (touching is fine: one
    step ends when the next begins), else records it."""
    spans = state.work_spans.setdefault(address, [])
    at = bisect.bisect_left(spans, (start, end))
    before = spans[at - 1] if at else None
    after = spans[at] if at < len(spans) else None
    if (before is not None and before[1] > start) or (after is not None and after[0] < end):
        raise Refused("work span overlaps time this node already claimed in another proof")
    spans.insert(at, (start, end))


def _challenge(state: LedgerState, record: Record, at_ms: int) -> None:
    config = state.config
    body = record.body
    proof = state.proofs.get(body["proof_id"])
    if proof is None:
        raise Refused("challenged proof is unknown or was not accepted")
    settle_at = (proof.record.body["epoch"] + 1) * config.epoch_ms + config.challenge_window_ms
    if proof.settled or at_ms >= settle_at:
        raise Refused("challenge window of this proof has closed")
    if legacy.is_v1(record):
        legacy.check_still_open(state.v2_proof_applied)
    legacy.check_same_rules(record, proof.record)
    if record.author == proof.record.author:
        raise Refused("a node cannot judge its own proof")
    if _author(record) in proof.fails or _author(record) in proof.passes:
        raise Refused("this verifier already judged the proof")
    checker = state.account(_author(record))
    if checker.staked < config.min_verifier_stake:
        raise Refused(f"verifiers need at least {config.min_verifier_stake} micro-NEURO staked")
    if legacy.is_v1(record):
        _v1_verdict(state, record, proof, at_ms)
        return
    if checker.available < config.challenge_bond:
        raise Refused("insufficient available balance for the verdict's bond")
    checker.available -= config.challenge_bond
    checker.locked += config.challenge_bond
    verdicts = proof.passes if body["verdict"] == "pass" else proof.fails
    verdicts[_author(record)] = config.challenge_bond
    proof.steps[_author(record)] = body["step"]
    state.checks_by_epoch.setdefault((_author(record), at_ms // config.epoch_ms), 0)
    state.checks_by_epoch[(_author(record), at_ms // config.epoch_ms)] += 1
    state.note(_author(record), at_ms, "challenge" if body["verdict"] == "fail" else "check",
               -config.challenge_bond, record.record_id, f"{body['verdict']}: bond locked")


def _v1_verdict(state: LedgerState, record: Record, proof: ProofState, at_ms: int) -> None:
    """A version-1 verdict as the previous release applied it (``legacy.py``): a pass locks no
    bond, a fail locks the challenge bond."""
    checker = state.account(_author(record))
    if record.body["verdict"] == "pass":
        proof.passes[_author(record)] = 0
        state.note(_author(record), at_ms, "check", 0, record.record_id, "pass")
        return
    if checker.available < state.config.challenge_bond:
        raise Refused("insufficient available balance for the challenge bond")
    checker.available -= state.config.challenge_bond
    checker.locked += state.config.challenge_bond
    proof.fails[_author(record)] = state.config.challenge_bond
    state.note(_author(record), at_ms, "challenge", -state.config.challenge_bond, record.record_id, "bond locked")


RECEIPT_TRAINING_EPOCHS = 3
"""A receipt counts when its signer had a training proof accepted for its epoch or one of the
three before: whoever receives training data trains on it, and a receiver made up to pay a data
server would first have to do training work that verifiers re-run."""


def _receipt(state: LedgerState, record: Record, at_ms: int) -> None:
    """A receiver's signed count of the samples a data server sent it in one epoch: what the
    server's data proof for that epoch may claim (``_proof``)."""
    body = record.body
    receiver, server, epoch = _author(record), body["server"], body["epoch"]
    if receiver == server:
        raise Refused("a node cannot sign a receipt for data it served itself")
    if body["samples"] > ponw.MAX_SAMPLES_PER_SECOND * state.config.epoch_ms // 1000:
        raise Refused("more samples than any node serves in one epoch")
    signed = _receipt_slot(state, record, state.receipts, signer=receiver, subject=server, epoch=epoch,
                           kind="receipt", signer_role="receiver", subject_role="server")
    signed[receiver] = body["samples"]
    state.note(receiver, at_ms, "receipt", 0, record.record_id, f"{body['samples']} samples from {server}")


def _receipt_slot(state: LedgerState, record: Record, book: dict[tuple[str, int], dict[str, Any]], *,
                  signer: str, subject: str, epoch: int, kind: str, signer_role: str,
                  subject_role: str) -> dict[str, Any]:
    """The guards every receipt passes once the caller refused one for oneself (signed inside the
    epoch it counts, only from a node with recent accepted training work, once per signer, subject
    and epoch); returns the subject's book for that epoch, where the caller enters what ``signer``
    signed."""
    a = "an" if kind[0] in "aeiou" else "a"
    if not epoch * state.config.epoch_ms <= record.timestamp_ms < (epoch + 1) * state.config.epoch_ms:
        raise Refused(f"{a} {kind} is signed inside the epoch it counts")
    if not _trained_recently(state, record.author, epoch):
        raise Refused(f"the {signer_role} has no accepted training proof in epochs {epoch - RECEIPT_TRAINING_EPOCHS}"
                      f"..{epoch}; only a training node's {kind}s count")
    signed = book.setdefault((subject, epoch), {})
    if signer in signed:
        raise Refused(f"this {signer_role} already signed {a} {kind} for this {subject_role} and epoch")
    return signed


def _trained_recently(state: LedgerState, author: bytes, epoch: int) -> bool:
    """``author`` had a training proof accepted for ``epoch`` or one of the three before."""
    return any(state.proofs[rid].record.author == author and state.proofs[rid].record.body["proof_kind"] == "training"
               for e in range(epoch - RECEIPT_TRAINING_EPOCHS, epoch + 1) for rid in state.epoch_proofs.get(e, []))


def _async_receipt(state: LedgerState, record: Record, at_ms: int) -> None:
    """A stage holder's signed word that it merged an async node's pseudo-gradient (``batches``
    of snapshot training on its ``layers`` from ``first_layer``) into an outer step in one epoch:
    what the async node's proof for that epoch may claim. The same guards as a receipt: never
    for oneself, inside its epoch, once per holder, contributor and epoch, and only from a node
    with recent accepted training work (a holder trains its stage)."""
    body = record.body
    holder, contributor, epoch = _author(record), body["contributor"], body["epoch"]
    if holder == contributor:
        raise Refused("a node cannot sign a receipt for its own async contribution")
    signed = _receipt_slot(state, record, state.async_receipts, signer=holder, subject=contributor, epoch=epoch,
                           kind="async receipt", signer_role="holder", subject_role="contributor")
    signed[holder] = (body["first_layer"], body["layers"], body["batches"])
    state.note(holder, at_ms, "async_receipt", 0, record.record_id,
               f"{body['batches']} batches on {body['layers']} layers from {contributor}")


def merged_by_stage(state: LedgerState, contributor: str, epoch: int) -> dict[int, tuple[int, int]]:
    """Per stage (first layer), the (layers, batches) of ``contributor``'s async work merged in
    ``epoch``: the most any one of its holders signed for (replicas merge the same contribution)."""
    per_stage: dict[int, tuple[int, int]] = {}
    for first_layer, layers, batches in state.async_receipts.get((contributor, epoch), {}).values():
        best = per_stage.get(first_layer, (0, 0))
        if layers * batches > best[0] * best[1]:
            per_stage[first_layer] = (layers, batches)
    return per_stage


def merged_layer_batches(state: LedgerState, contributor: str, epoch: int) -> int:
    """Layer-batches of ``contributor``'s async work merged in ``epoch``, summed over the stages:
    what its async proof for that epoch may claim."""
    return sum(layers * batches for layers, batches in merged_by_stage(state, contributor, epoch).values())


def _proposal(state: LedgerState, record: Record, at_ms: int) -> None:
    config = state.config
    account = state.account(_author(record))
    if len(record.body["merges"]) > config.max_merges_per_proposal:
        raise Refused(f"more than {config.max_merges_per_proposal} merges in one proposal")
    if account.available < config.proposal_stake:
        raise Refused(f"a proposal needs {config.proposal_stake} micro-NEURO available to lock as stake")
    account.available -= config.proposal_stake
    account.locked += config.proposal_stake
    proposal = governance.Proposal(
        proposal_id=record.record_id, author=_author(record), title=record.body["title"],
        merges=[(bytes.fromhex(a), bytes.fromhex(b)) for a, b in record.body["merges"]], created_ms=at_ms)
    state.proposals[proposal.proposal_id] = proposal
    for due in (proposal.voting_opens(config), proposal.voting_closes(config),
                proposal.implementation_at(config)):
        state.schedule(due, 2, "governance", f"{due}:{proposal.proposal_id}")
    state.note(_author(record), at_ms, "proposal", -config.proposal_stake, record.record_id, "stake locked")


def _vote(state: LedgerState, record: Record, at_ms: int) -> None:
    proposal = state.proposals.get(record.body["proposal_id"])
    if proposal is None:
        raise Refused("unknown proposal")
    voter = _author(record)
    governance.check_vote(proposal, voter, state.account(voter).staked, at_ms, state.config)
    proposal.votes[voter] = record.body["approve"]
    state.note(voter, at_ms, "vote", 0, record.record_id, "approve" if record.body["approve"] else "reject")


_HANDLERS = {
    "genesis": _genesis, "transfer": _transfer, "stake": _stake, "unstake": _unstake,
    "proof": _proof, "challenge": _challenge, "proposal": _proposal, "vote": _vote, "receipt": _receipt,
    "async_receipt": _async_receipt,
}
