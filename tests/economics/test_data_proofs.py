"""Data mode is paid for samples served, counted from the receivers' signed receipts."""

from __future__ import annotations

from app.node.economics import ponw
from app.node.economics.constants import neuro

from .helpers import ALICE, BOB, CAROL, DAVE, T0, Devnet, submit_all

NET = Devnet()
CFG = NET.config
E = T0 // CFG.epoch_ms + 2  # the epoch the data is served in


def _receipt(receiver, server, samples, epoch=E, offset_ms=400):
    return ponw.make_receipt(receiver, CFG, server=server.address, epoch=epoch, samples=samples,
                             timestamp_ms=epoch * CFG.epoch_ms + offset_ms)


def _data_proof(server, samples, epoch=E):
    # stamped after its epoch's receipts, as the server makes it once the epoch ends
    return NET.proof(server, epoch, "data", samples=samples, role="none", offset_ms=CFG.epoch_ms - 1)


def _ledger(tmp_path):
    ledger = NET.ledger(tmp_path)
    genesis = NET.genesis_record({a.address: neuro(10) for a in (ALICE, BOB, CAROL, DAVE)})
    trainers = [NET.proof(k, E - 1, "training") for k in (BOB, CAROL)]  # BOB and CAROL train
    assert all(r.accepted for r in submit_all(ledger, [genesis, *trainers]))
    return ledger


def test_a_data_proof_is_paid_for_the_samples_its_receivers_signed_for(tmp_path):
    ledger = _ledger(tmp_path)
    proof = _data_proof(ALICE, 70)
    assert all(r.accepted for r in submit_all(ledger, [_receipt(BOB, ALICE, 50), _receipt(CAROL, ALICE, 20), proof]))
    assert ledger.record_status(proof.record_id) == ("applied", "")
    after = (E + 1) * CFG.epoch_ms + CFG.challenge_window_ms + 1
    submit_all(ledger, [NET.transfer(BOB, DAVE, 1, after)])  # moves the canonical clock past the window
    assert ledger.earnings(ALICE.address, by="kind") == {"data": 70 * CFG.rewards["data_per_sample"]}


def test_a_data_proof_claiming_more_than_its_receipts_is_refused(tmp_path):
    ledger = _ledger(tmp_path)
    unreceipted = _data_proof(DAVE, 1)
    proof = _data_proof(ALICE, 51)
    submit_all(ledger, [_receipt(BOB, ALICE, 50), proof, unreceipted])
    status, reason = ledger.record_status(proof.record_id)
    assert status == "rejected" and "receipts for 50" in reason
    status, reason = ledger.record_status(unreceipted.record_id)
    assert status == "rejected" and "receipts for 0" in reason
    assert ledger.balance(ALICE.address).pending == 0


def test_receipts_count_only_from_training_receivers_once_per_epoch_and_not_from_the_server(tmp_path):
    ledger = _ledger(tmp_path)
    from_idle = _receipt(DAVE, ALICE, 10)  # DAVE has no training proof: a made-up receiver
    own = _receipt(ALICE, ALICE, 10)
    first, second = _receipt(BOB, ALICE, 10), _receipt(BOB, ALICE, 30, offset_ms=500)
    stamped_late = _receipt(CAROL, ALICE, 10, offset_ms=CFG.epoch_ms + 5)
    submit_all(ledger, [from_idle, own, first, second, stamped_late])
    reasons = {name: ledger.record_status(r.record_id) for name, r in
               (("idle", from_idle), ("own", own), ("first", first), ("second", second), ("late", stamped_late))}
    assert reasons["first"] == ("applied", "")
    assert reasons["idle"][0] == "rejected" and "training proof" in reasons["idle"][1]
    assert reasons["own"][0] == "rejected" and "served itself" in reasons["own"][1]
    assert reasons["second"][0] == "rejected" and "already signed" in reasons["second"][1]
    assert reasons["late"][0] == "rejected" and "inside the epoch" in reasons["late"][1]
    proof = _data_proof(ALICE, 11)
    submit_all(ledger, [proof])
    assert "receipts for 10" in ledger.record_status(proof.record_id)[1]
