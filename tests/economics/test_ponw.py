import pytest

from app.node.economics import ponw
from app.node.economics.constants import neuro
from app.node.economics.rewards import epoch_cap

from .helpers import ALICE, BOB, T0, THOUSAND, Devnet, submit_all


@pytest.fixture()
def net() -> Devnet:
    return Devnet()


@pytest.fixture()
def ledger(net, tmp_path):
    ledger = net.ledger(tmp_path)
    ledger.submit(net.genesis_record({ALICE.address: THOUSAND}).to_bytes(), T0)
    yield ledger
    ledger.close()


def _advance_clock(net, ledger, to_ms):
    """Any later record moves the canonical clock; a tiny transfer does."""
    submit_all(ledger, [net.transfer(ALICE, BOB, 1, to_ms)])


def test_training_proof_pays_after_the_challenge_window(net, ledger):
    epoch = net.epoch_of(T0) + 1
    proof = net.proof(BOB, epoch, batches=10, layers=2)
    assert submit_all(ledger, [proof])[0].accepted
    pending = ledger.balance(BOB.address).pending
    assert pending == 10 * 2 * neuro(0.0005) * 11 // 10  # worker role +10 %
    _advance_clock(net, ledger, (epoch + 1) * net.config.epoch_ms + net.config.challenge_window_ms)
    balance = ledger.balance(BOB.address)
    assert balance.pending == 0 and balance.available == pending + 1
    assert ledger.earnings(BOB.address, by="kind") == {"training": pending}


def test_replayed_proof_is_a_duplicate_and_paid_once(net, ledger):
    epoch = net.epoch_of(T0) + 1
    proof = net.proof(BOB, epoch)
    first, replay = submit_all(ledger, [proof, proof])
    assert (first.status, replay.status) == ("accepted", "duplicate")
    assert len(ledger.history(BOB.address, kinds=("proof",))) == 1


def test_second_proof_for_the_same_epoch_voids_both(net, ledger):
    epoch = net.epoch_of(T0) + 1
    one, two = net.proof(BOB, epoch, batches=5), net.proof(BOB, epoch, batches=6)
    results = submit_all(ledger, [one, two])
    assert results[1].status == "rejected"
    assert ledger.record_status(one.record_id)[0] == "conflict"
    assert ledger.balance(BOB.address).pending == 0


@pytest.mark.parametrize("figures, reason", [
    ({"batches": 10_000, "layers": 4, "layer_us": 100, "work_start_ms": T0 + 1000}, "do not fit"),
    ({"batches": 10, "layers": 2, "layer_us": 1}, "faster than any hardware"),
    ({"work_end_ms": T0 + 2500}, "does not end inside the proof's epoch"),
    ({"work_start_ms": T0 - 5000}, "more than 3 epochs before"),
    ({"batches": 0}, "without batches"),
])
def test_impossible_training_claims_are_refused(net, ledger, figures, reason):
    proof = net.proof(BOB, net.epoch_of(T0) + 1, **figures)  # stamped at T0 + 1010
    result = submit_all(ledger, [proof])[0]
    assert result.status == "rejected" and reason in result.reason


def test_a_slow_node_with_many_layers_is_paid_whatever_its_tier(net, ledger):
    """The symptom of issue 14: 32 batches over 11 layers on a loaded T4 machine. Its cost per
    layer was measured on the real shape (2 ms), and the work fits the time it took."""
    epoch = net.epoch_of(T0) + 1
    proof = net.proof(BOB, epoch, batches=32, layers=11, tier=4, layer_us=2000, offset_ms=900)
    result = submit_all(ledger, [proof])[0]
    assert result.accepted, result.reason
    assert proof.body["work_end_ms"] - proof.body["work_start_ms"] == 32 * 11 * 2  # ms
    assert ledger.balance(BOB.address).pending > 0


def test_a_node_cannot_claim_the_same_time_twice(net, ledger):
    epoch = net.epoch_of(T0) + 1
    first = net.proof(BOB, epoch, batches=10, layers=2, offset_ms=900)
    # the next epoch's proof claims time back into the first one's span
    second = net.proof(BOB, epoch + 1, batches=10, layers=2, offset_ms=100,
                       work_start_ms=first.body["work_end_ms"] - 1)
    touching = net.proof(BOB, epoch + 2, batches=10, layers=2, offset_ms=100,
                         work_start_ms=first.body["work_end_ms"])
    submit_all(ledger, [first, second, touching])
    assert ledger.record_status(first.record_id)[0] == "applied"
    assert ledger.record_status(touching.record_id)[0] == "applied"
    status, reason = ledger.record_status(second.record_id)
    assert status == "rejected" and "already claimed" in reason


def test_training_proof_whose_model_hash_did_not_change_is_refused(net):
    work = ponw.WorkFigures(batches=1, layers=1, tier=3, work_start_ms=5000, work_end_ms=5001, layer_us=500)
    same = b"\x07" * 32
    proof = ponw.make_proof(BOB, net.config, epoch=5, kind="training", work=work, timestamp_ms=5 * 1000 + 1,
                            model_before=same, model_after=same)
    with pytest.raises(ponw.ProofRejected, match="did not change"):
        ponw.check_proof(proof, net.config)


def test_proof_for_a_future_epoch_is_refused_at_the_door(net, ledger):
    far = net.epoch_of(T0) + 1000
    proof = net.proof(BOB, far)
    result = ledger.submit(proof.to_bytes(), T0)
    assert result.status == "rejected"


def test_uptime_longer_than_the_epoch_is_refused(net):
    proof = net.proof(BOB, 3, kind="uptime", uptime_ms=net.config.epoch_ms + 1)
    with pytest.raises(ponw.ProofRejected, match="uptime"):
        ponw.check_proof(proof, net.config)


def test_proofs_beyond_the_hourly_limit_are_refused(tmp_path):
    from app.node.economics.constants import EconomicsConfig

    net = Devnet(config=EconomicsConfig.devnet(max_proofs_per_hour=3, genesis_public_key=""))
    ledger = net.ledger(tmp_path)
    proofs = [net.proof(BOB, 100 + i, kind="uptime", uptime_ms=500) for i in range(5)]
    submit_all(ledger, proofs)
    statuses = [ledger.record_status(p.record_id)[0] for p in proofs]
    assert statuses == ["applied"] * 3 + ["rejected"] * 2


def test_epoch_emission_is_capped_and_scaled_pro_rata(tmp_path):
    from app.node.economics.constants import EconomicsConfig

    cfg = EconomicsConfig.devnet(epoch_emission_per_node=1000, genesis_public_key="")
    net = Devnet(config=cfg)
    ledger = net.ledger(tmp_path)
    epoch = 50
    submit_all(ledger, [net.proof(ALICE, epoch, batches=10, layers=1, tier=2),
                        net.proof(BOB, epoch, batches=30, layers=1, tier=2)])
    net.seqs.clear()
    submit_all(ledger, [net.proof(ALICE, epoch + 10, kind="uptime", uptime_ms=1)])  # moves the clock
    paid_alice = ledger.balance(ALICE.address).available
    paid_bob = ledger.balance(BOB.address).available
    assert paid_alice + paid_bob <= epoch_cap(2, cfg) == 1414
    assert paid_bob == pytest.approx(3 * paid_alice, rel=0.01)


def test_proof_arriving_after_its_challenge_window_is_refused_at_the_door(net, ledger):
    epoch = net.epoch_of(T0) + 1
    proof = net.proof(BOB, epoch)  # stamped inside its epoch, published much later
    closes = (epoch + 1) * net.config.epoch_ms + net.config.challenge_window_ms
    late = ledger.submit(proof.to_bytes(), closes + net.config.max_clock_skew_ms + 1)
    assert late.status == "rejected" and "can no longer be checked" in late.reason
    assert ledger.submit(proof.to_bytes(), closes - 1).accepted
