"""Async mode is paid for pseudo-gradients stage holders merged, from the holders' signed receipts."""

from __future__ import annotations

import pytest

from app.node.economics import ponw
from app.node.economics.constants import neuro

from .helpers import ALICE, BOB, CAROL, DAVE, T0, Devnet, submit_all

NET = Devnet()
CFG = NET.config
E = T0 // CFG.epoch_ms + 2  # the epoch the contributions are merged in


def _receipt(holder, contributor, batches, first_layer=0, layers=2, epoch=E, offset_ms=400):
    return ponw.make_async_receipt(holder, CFG, contributor=contributor.address, epoch=epoch, first_layer=first_layer,
                                   layers=layers, batches=batches, timestamp_ms=epoch * CFG.epoch_ms + offset_ms)


def _async_proof(author, batches, layers, epoch=E):
    work = ponw.WorkFigures(batches=batches, layers=layers, role="none", tier=5, async_mode=True)
    return ponw.make_proof(author, CFG, epoch=epoch, kind="async", work=work,
                           timestamp_ms=epoch * CFG.epoch_ms + CFG.epoch_ms - 1)


def _ledger(tmp_path):
    ledger = NET.ledger(tmp_path)
    genesis = NET.genesis_record({a.address: neuro(10) for a in (ALICE, BOB, CAROL, DAVE)})
    holders = [NET.proof(k, E - 1, "training") for k in (BOB, CAROL)]  # BOB and CAROL hold stages and train
    assert all(r.accepted for r in submit_all(ledger, [genesis, *holders]))
    return ledger


def test_an_async_proof_is_paid_for_what_the_stages_merged_counting_replicas_once(tmp_path):
    ledger = _ledger(tmp_path)
    # BOB and CAROL are replicas of layers 0..2 and both merged ALICE's 4 batches
    receipts = [_receipt(BOB, ALICE, 4), _receipt(CAROL, ALICE, 4)]
    proof = _async_proof(ALICE, 4, 2)
    assert all(r.accepted for r in submit_all(ledger, [*receipts, proof]))
    assert ledger.merged_layer_batches(ALICE.address, E) == 8  # the replica's copy is not counted twice
    assert ledger.record_status(proof.record_id) == ("applied", "")
    after = (E + 1) * CFG.epoch_ms + CFG.challenge_window_ms + 1
    submit_all(ledger, [NET.transfer(BOB, DAVE, 1, after)])  # moves the canonical clock past the window
    assert ledger.earnings(ALICE.address, by="kind") == {"async": 4 * 2 * CFG.rewards["async_training_per_batch_layer"]}


def test_an_async_proof_claiming_more_than_was_merged_is_refused(tmp_path):
    ledger = _ledger(tmp_path)
    nothing_merged = _async_proof(DAVE, 1, 1)
    proof = _async_proof(ALICE, 4, 4)  # 16 layer-batches; the holders merged 8
    submit_all(ledger, [_receipt(BOB, ALICE, 4), proof, nothing_merged])
    status, reason = ledger.record_status(proof.record_id)
    assert status == "rejected" and "signed for 8" in reason
    status, reason = ledger.record_status(nothing_merged.record_id)
    assert status == "rejected" and "signed for 0" in reason
    assert ledger.balance(ALICE.address).pending == 0


def test_async_receipts_count_only_from_training_holders_once_per_epoch_and_never_for_oneself(tmp_path):
    ledger = _ledger(tmp_path)
    from_idle = _receipt(DAVE, ALICE, 4)  # DAVE has no training proof: a made-up holder
    own = _receipt(BOB, BOB, 4)
    first, second = _receipt(BOB, ALICE, 4), _receipt(BOB, ALICE, 4, first_layer=2, offset_ms=500)
    stamped_late = _receipt(CAROL, ALICE, 4, offset_ms=CFG.epoch_ms + 5)
    submit_all(ledger, [from_idle, own, first, second, stamped_late])
    status = {name: ledger.record_status(r.record_id) for name, r in
              (("idle", from_idle), ("own", own), ("first", first), ("second", second), ("late", stamped_late))}
    assert status["first"] == ("applied", "")
    assert status["idle"][0] == "rejected" and "training proof" in status["idle"][1]
    assert status["own"][0] == "rejected" and "its own" in status["own"][1]
    assert status["second"][0] == "rejected" and "already signed" in status["second"][1]
    assert status["late"][0] == "rejected" and "inside the epoch" in status["late"][1]


def test_an_async_proof_without_batches_or_with_tokens_is_refused_at_the_door() -> None:
    for figures in ({"batches": 0, "layers": 2}, {"batches": 4, "layers": 0}, {"batches": 4, "layers": 2, "tokens": 9}):
        work = ponw.WorkFigures(role="none", tier=5, **figures)
        record = ponw.make_proof(ALICE, CFG, epoch=E, kind="async", work=work, timestamp_ms=E * CFG.epoch_ms + 5)
        with pytest.raises(ponw.ProofRejected):
            ponw.check_proof(record, CFG)
