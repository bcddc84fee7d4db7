import pytest
import torch

from app.node.economics import spotcheck
from app.node.economics.constants import neuro

from .helpers import BOB, CAROL, DAVE, T0, Devnet, submit_all


@pytest.fixture()
def layer() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))


@pytest.fixture()
def net() -> Devnet:
    return Devnet()


@pytest.fixture()
def ledger(net, tmp_path):
    ledger = net.ledger(tmp_path)
    allocations = {BOB.address: neuro(50), CAROL.address: neuro(500), DAVE.address: neuro(500)}
    submit_all(ledger, [net.genesis_record(allocations), net.stake(BOB, neuro(30), T0 + 1),
                        net.stake(CAROL, neuro(100), T0 + 2), net.stake(DAVE, neuro(100), T0 + 3)])
    yield ledger
    ledger.close()


def _sample(proof_id: str, layer, noisy: bool) -> spotcheck.StepSample:
    inputs = torch.randn(4, 8, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outputs = torch.randn(4, 8, 16) if noisy else layer(inputs)
    return spotcheck.StepSample(proof_id=proof_id, layer_index=3, inputs=inputs, outputs=outputs)


def _settle(net, ledger, epoch):
    end = (epoch + 1) * net.config.epoch_ms + net.config.challenge_window_ms
    submit_all(ledger, [net.transfer(CAROL, DAVE, 1, end + 1)])


def _verdict(net, checker, proof, layer, sample, ts):
    result = spotcheck.spot_check(layer, sample, net.config)
    seq = net.seqs.get(checker.address, 0) + 1
    net.seqs[checker.address] = seq
    return result, spotcheck.challenge_record(checker, net.config, proof.record_id, result, seq, ts)


def test_honest_outputs_pass_within_tolerance(net, layer):
    sample = _sample("ab" * 32, layer, noisy=False)
    result = spotcheck.spot_check(layer, sample, net.config)
    assert result.passed and result.max_abs_error < 1e-5


def test_spot_check_catches_noise_and_slashes_the_cheater(net, ledger, layer):
    epoch = net.epoch_of(T0) + 1
    proof = net.proof(BOB, epoch)
    submit_all(ledger, [proof])
    result, challenge = _verdict(net, CAROL, proof, layer, _sample(proof.record_id, layer, noisy=True),
                                 proof.timestamp_ms + 100)
    assert not result.passed and result.max_abs_error > 0.1
    assert submit_all(ledger, [challenge])[0].accepted
    carol_before = ledger.balance(CAROL.address)
    _settle(net, ledger, epoch)
    bob = ledger.balance(BOB.address)
    penalty = 2 * net.config.cheat_penalty  # seed 001: 2x
    assert bob.staked == neuro(30) - penalty and bob.pending == 0
    assert ledger.record_status(proof.record_id)[0] == "slashed"
    carol = ledger.balance(CAROL.address)
    clock_transfer = 1 + 100  # _settle's transfer and its fee
    assert carol.available == carol_before.available + net.config.challenge_bond + penalty // 2 - clock_transfer
    assert ledger.earnings(BOB.address) == {}


def test_frivolous_challenge_costs_the_challenger(net, ledger, layer):
    epoch = net.epoch_of(T0) + 1
    proof = net.proof(BOB, epoch)
    submit_all(ledger, [proof])
    honest = _sample(proof.record_id, layer, noisy=False)
    forged_fail = spotcheck.CheckResult(passed=False, max_abs_error=9.0, evidence=b"\0" * 32)
    seq = net.seqs.get(DAVE.address, 0) + 1
    net.seqs[DAVE.address] = seq
    accusation = spotcheck.challenge_record(DAVE, net.config, proof.record_id, forged_fail, seq,
                                            proof.timestamp_ms + 50)
    _, defence = _verdict(net, CAROL, proof, layer, honest, proof.timestamp_ms + 60)
    submit_all(ledger, [accusation, defence])
    dave_before = ledger.balance(DAVE.address)
    _settle(net, ledger, epoch)
    dave = ledger.balance(DAVE.address)
    bond = net.config.challenge_bond
    assert dave.staked == dave_before.staked - bond  # the bond was locked and is gone
    assert dave.available == dave_before.available + 1  # only the clock-moving transfer arrived
    assert ledger.balance(BOB.address).available > bond // 2  # compensation plus the reward
    assert ledger.record_status(proof.record_id)[0] == "applied"


def test_unstaked_nodes_cannot_challenge(net, ledger, layer):
    from .helpers import ALICE

    proof = net.proof(BOB, net.epoch_of(T0) + 1)
    submit_all(ledger, [proof])
    _, challenge = _verdict(net, ALICE, proof, layer, _sample(proof.record_id, layer, True), proof.timestamp_ms + 1)
    submit_all(ledger, [challenge])
    status, reason = ledger.record_status(challenge.record_id)
    assert status == "rejected" and "stake" in reason


def test_sampling_checks_about_the_configured_share_of_proofs():
    picked = sum(spotcheck.should_check(f"{i:064x}", b"checker", 0.05) for i in range(4000))
    assert 140 <= picked <= 260
