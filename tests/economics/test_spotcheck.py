"""Checks by re-execution and the ledger's verdict rules: two confirmations slash, one honest
verifier refutes a griefer, the losing side of a verdict pays."""

import pytest
import torch

from app.node.economics import spotcheck
from app.node.economics.constants import neuro

from .helpers import ALICE, BOB, CAROL, DAVE, T0, Devnet, key, submit_all

ERIN = key(5)


@pytest.fixture()
def layer() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))


LR = 0.1
META = {"bf16": False}


def rerun(layer):  # noqa: ANN201 - the verifier's own copy of the training code, here forward, backward, SGD
    def run(sample: spotcheck.StepSample) -> spotcheck.ReRun:
        weights = sample.part(spotcheck.WEIGHTS)
        params = {k: v.clone().requires_grad_() for k, v in weights.items()}
        out = torch.func.functional_call(layer, params, (sample.tensors["in.0.0"],))
        grads = torch.autograd.grad(out, list(params.values()), sample.tensors["g.0"])
        after = {k: (params[k] - LR * g).detach() for k, g in zip(params, grads, strict=True)}
        return spotcheck.ReRun({"out.0": out.detach()}, after, weights)
    return run


def step_tensors(layer, weights: dict, seed: int, variant: str = "honest") -> dict:
    """One step's committed tensors; a lazy prover's variants: noise for outputs, the update
    skipped (weights after = before), random weights after."""
    x = torch.randn(4, 8, 16, generator=torch.Generator().manual_seed(seed))
    g = torch.randn(4, 8, 16, generator=torch.Generator().manual_seed(seed + 100))
    tensors = {**{"w." + k: v for k, v in weights.items()}, "in.0.0": x, "g.0": g}
    mine = rerun(layer)(spotcheck.StepSample(0, (), tensors, META))
    out, after = mine.outputs["out.0"], mine.weights_after
    if variant == "noise":
        out = torch.randn_like(out)
    elif variant == "skipped":
        after = weights
    elif variant == "random":
        after = {k: torch.randn_like(v) for k, v in weights.items()}
    return {**tensors, "out.0": out, **{"a." + k: v for k, v in after.items()}}


def committed_steps(layer, lazy: bool, steps: int = 3) -> list[spotcheck.StepSample]:
    """What a prover keeps for its steps; a lazy one commits steps it never computed."""
    weights = {k: v.detach().clone() for k, v in layer.named_parameters()}
    raw = []
    for i in range(steps):
        tensors = step_tensors(layer, weights, i, ("noise", "skipped", "random")[i % 3] if lazy else "honest")
        raw.append(tensors)
        weights = {k[2:]: v for k, v in tensors.items() if k.startswith("a.")}
    leaves = tuple(spotcheck.step_leaf(t, META) for t in raw)
    return [spotcheck.StepSample(i, leaves, t, META) for i, t in enumerate(raw)]


@pytest.fixture()
def net() -> Devnet:
    return Devnet()


@pytest.fixture()
def ledger(net, tmp_path):
    ledger = net.ledger(tmp_path)
    allocations = {BOB.address: neuro(50), CAROL.address: neuro(500), DAVE.address: neuro(500),
                   ERIN.address: neuro(500)}
    submit_all(ledger, [net.genesis_record(allocations), net.stake(BOB, neuro(30), T0 + 1),
                        net.stake(CAROL, neuro(100), T0 + 2), net.stake(DAVE, neuro(100), T0 + 3),
                        net.stake(ERIN, neuro(100), T0 + 4)])
    yield ledger
    ledger.close()


def training_proof(net, author, samples, epoch):
    root = spotcheck.work_root(samples[0].leaves)
    return net.proof(author, epoch, work_root=root)


def _settle(net, ledger, epoch):
    end = (epoch + 1) * net.config.epoch_ms + net.config.challenge_window_ms
    submit_all(ledger, [net.transfer(CAROL, ALICE, 1, end + 1)])


def verdict(net, checker, proof, result, ts):
    seq = net.seqs.get(checker.address, 0) + 1
    net.seqs[checker.address] = seq
    return spotcheck.challenge_record(checker, net.config, proof.record_id, result, seq, ts)


def check(net, layer, proof, samples, step):
    return spotcheck.check_sample(dict(proof.body), samples[step], step, rerun(layer), net.config)


def test_honest_steps_pass_bitwise_and_lazy_ones_fail(net, layer):
    honest = committed_steps(layer, lazy=False)
    proof = training_proof(net, BOB, honest, net.epoch_of(T0) + 1)
    result = check(net, layer, proof, honest, 1)
    assert result.passed and result.bitwise and result.evidence.leaf == honest[0].leaves[1]
    lazy = committed_steps(layer, lazy=True)
    lazy_proof = training_proof(net, BOB, lazy, net.epoch_of(T0) + 1)
    result = check(net, layer, lazy_proof, lazy, 2)
    assert not result.passed and result.evidence.error_ppm > 100_000


def test_a_sample_that_is_not_the_committed_one_fails(net, layer):
    samples = committed_steps(layer, lazy=False)
    proof = training_proof(net, BOB, samples, net.epoch_of(T0) + 1)
    swapped = spotcheck.StepSample(1, samples[1].leaves, samples[0].tensors, META)
    assert "not the committed" in check(net, layer, proof, [None, swapped], 1).reason
    assert not spotcheck.check_sample(dict(proof.body), None, 0, rerun(layer), net.config).passed
    other_root = training_proof(net, BOB, committed_steps(layer, lazy=False, steps=2), net.epoch_of(T0) + 1)
    assert "work_root" in check(net, layer, other_root, samples, 0).reason


def test_two_confirmations_slash_the_lazy_prover_and_the_checkers_are_paid(net, ledger, layer):
    epoch = net.epoch_of(T0) + 1
    lazy = committed_steps(layer, lazy=True)
    proof = training_proof(net, BOB, lazy, epoch)
    submit_all(ledger, [proof])
    # the second verifier referees: it re-runs the step the first one's evidence names
    fails = [verdict(net, c, proof, check(net, layer, proof, lazy, 2), proof.timestamp_ms + 10 + i)
             for i, c in enumerate((CAROL, DAVE))]
    submit_all(ledger, fails)
    carol_before = ledger.balance(CAROL.address)
    _settle(net, ledger, epoch)
    bob = ledger.balance(BOB.address)
    penalty = 2 * net.config.cheat_penalty
    assert bob.staked == neuro(30) - penalty and bob.pending == 0
    assert ledger.record_status(proof.record_id)[0] == "slashed"
    carol = ledger.balance(CAROL.address)
    assert carol.available == carol_before.available + net.config.challenge_bond + penalty // 4 - 101
    assert ledger.earnings(BOB.address) == {}


def test_one_fail_alone_does_not_slash(net, ledger, layer):
    epoch = net.epoch_of(T0) + 1
    lazy = committed_steps(layer, lazy=True)
    proof = training_proof(net, BOB, lazy, epoch)
    submit_all(ledger, [proof, verdict(net, CAROL, proof, check(net, layer, proof, lazy, 0), proof.timestamp_ms + 5)])
    _settle(net, ledger, epoch)
    assert ledger.record_status(proof.record_id)[0] == "applied"
    assert ledger.balance(BOB.address).staked == neuro(30)


def test_fails_on_different_steps_do_not_add_up_and_a_pass_elsewhere_does_not_refute(net, ledger, layer):
    epoch = net.epoch_of(T0) + 1
    lazy = committed_steps(layer, lazy=True)
    proof = training_proof(net, BOB, lazy, epoch)
    honest_step = spotcheck.CheckResult(True, "ok", spotcheck.Evidence(2, lazy[0].leaves[2], b"\3" * 32, 0))
    records = [proof, verdict(net, CAROL, proof, check(net, layer, proof, lazy, 0), proof.timestamp_ms + 10),
               verdict(net, DAVE, proof, check(net, layer, proof, lazy, 1), proof.timestamp_ms + 11),
               verdict(net, ERIN, proof, honest_step, proof.timestamp_ms + 12)]
    submit_all(ledger, records)
    carol_before = ledger.balance(CAROL.address)
    _settle(net, ledger, epoch)
    assert ledger.record_status(proof.record_id)[0] == "applied"  # one fail per step: not confirmed
    assert ledger.balance(CAROL.address).available == carol_before.available + net.config.challenge_bond - 101


def test_a_griefer_refuted_by_one_honest_verifier_loses_its_bond(net, ledger, layer):
    epoch = net.epoch_of(T0) + 1
    honest = committed_steps(layer, lazy=False)
    proof = training_proof(net, BOB, honest, epoch)
    submit_all(ledger, [proof])
    real = check(net, layer, proof, honest, 1)
    forged = spotcheck.CheckResult(False, "forged", spotcheck.Evidence(1, honest[0].leaves[1], b"\1" * 32, 9_000_000))
    accusation = verdict(net, DAVE, proof, forged, proof.timestamp_ms + 50)
    # the referee re-runs exactly the step the evidence names
    assert real.evidence.step == forged.evidence.step and real.passed
    defence = verdict(net, CAROL, proof, real, proof.timestamp_ms + 60)
    submit_all(ledger, [accusation, defence])
    dave_before, carol_before = ledger.balance(DAVE.address), ledger.balance(CAROL.address)
    _settle(net, ledger, epoch)
    bond = net.config.challenge_bond
    assert ledger.balance(DAVE.address).available == dave_before.available  # the locked bond is gone
    assert ledger.balance(CAROL.address).available == carol_before.available + bond - 101
    assert ledger.balance(BOB.address).staked == neuro(30)
    assert ledger.balance(BOB.address).available > bond // 2  # compensation plus the reward
    assert ledger.record_status(proof.record_id)[0] == "applied"


def test_covering_for_a_cheat_costs_the_pass_bond(net, ledger, layer):
    epoch = net.epoch_of(T0) + 1
    lazy = committed_steps(layer, lazy=True)
    proof = training_proof(net, BOB, lazy, epoch)
    cover = spotcheck.CheckResult(True, "covering", spotcheck.Evidence(0, lazy[0].leaves[0], b"\2" * 32, 0))
    records = [proof] + [verdict(net, c, proof, check(net, layer, proof, lazy, 0), proof.timestamp_ms + 10 + i)
                         for i, c in enumerate((CAROL, DAVE))]
    records.append(verdict(net, ERIN, proof, cover, proof.timestamp_ms + 20))
    submit_all(ledger, records)
    erin_before = ledger.balance(ERIN.address)
    _settle(net, ledger, epoch)
    assert ledger.record_status(proof.record_id)[0] == "slashed"
    erin = ledger.balance(ERIN.address)
    assert erin.available == erin_before.available  # the bond never came back
    assert erin.staked == erin_before.staked - net.config.challenge_bond  # staked counts locked bonds


def test_unstaked_nodes_cannot_judge(net, ledger, layer):
    samples = committed_steps(layer, lazy=True)
    proof = training_proof(net, BOB, samples, net.epoch_of(T0) + 1)
    submit_all(ledger, [proof])
    challenge = verdict(net, ALICE, proof, check(net, layer, proof, samples, 0), proof.timestamp_ms + 1)
    submit_all(ledger, [challenge])
    status, reason = ledger.record_status(challenge.record_id)
    assert status == "rejected" and "stake" in reason


def test_verification_proofs_are_bounded_by_the_checks_in_the_ledger(net, ledger, layer):
    epoch = net.epoch_of(T0) + 1
    samples = committed_steps(layer, lazy=False)
    proof = training_proof(net, BOB, samples, epoch)
    submit_all(ledger, [proof, verdict(net, CAROL, proof, check(net, layer, proof, samples, 0), proof.timestamp_ms + 5)])
    fair = net.proof(CAROL, epoch, kind="verification", samples=1, offset_ms=1000 + 900)
    greedy = net.proof(DAVE, epoch, kind="verification", samples=1, offset_ms=1000 + 900)
    submit_all(ledger, [fair, greedy])
    assert ledger.record_status(fair.record_id)[0] == "applied"
    status, reason = ledger.record_status(greedy.record_id)
    assert status == "rejected" and "shows 0" in reason


def test_a_lazy_step_with_real_outputs_fails_on_its_update(net, layer):
    """Outputs right but the backward and update skipped, or random weights after: only the
    re-executed optimizer step shows it (a forward-only check would pass both)."""
    weights = {k: v.detach().clone() for k, v in layer.named_parameters()}
    for variant, error in (("skipped", 1.0), ("random", None)):
        tensors = step_tensors(layer, weights, 7, variant)
        leaves = (spotcheck.step_leaf(tensors, META),)
        body = {"work_root": spotcheck.work_root(leaves).hex()}
        result = spotcheck.check_sample(body, spotcheck.StepSample(0, leaves, tensors, META), 0, rerun(layer),
                                        net.config)
        assert not result.passed and "update differs" in result.reason
        assert result.max_abs_error == pytest.approx(error) if error else result.max_abs_error > 1.5


def test_a_step_whose_served_state_makes_the_update_vanish_fails_even_bitwise(net, layer):
    """Served moments can scale an AdamW update below float32 resolution; then the weights after
    the decay alone match the re-execution bitwise, though no backward was needed to write them."""
    weights = {k: v.detach().clone() for k, v in layer.named_parameters()}
    tensors = {**step_tensors(layer, weights, 5), **{"a." + k: v for k, v in weights.items()}}

    def vanishing(sample: spotcheck.StepSample) -> spotcheck.ReRun:
        real = rerun(layer)(sample)
        return spotcheck.ReRun(real.outputs, sample.part(spotcheck.WEIGHTS), sample.part(spotcheck.WEIGHTS))

    leaves = (spotcheck.step_leaf(tensors, META),)
    body = {"work_root": spotcheck.work_root(leaves).hex()}
    result = spotcheck.check_sample(body, spotcheck.StepSample(0, leaves, tensors, META), 0, vanishing, net.config)
    assert not result.passed and "update is zero" in result.reason


def test_an_honest_step_computed_elsewhere_passes_within_the_bound_not_bitwise(net, layer):
    """Another machine's reduction order: outputs and update off by ~1e-6 relative."""
    weights = {k: v.detach().clone() for k, v in layer.named_parameters()}
    tensors = step_tensors(layer, weights, 8)
    tensors["out.0"] = tensors["out.0"] * (1 + 1e-6)
    tensors.update({k: weights[k[2:]] + (v - weights[k[2:]]) * (1 + 1e-4) for k, v in tensors.items()
                    if k.startswith("a.")})
    leaves = (spotcheck.step_leaf(tensors, META),)
    body = {"work_root": spotcheck.work_root(leaves).hex()}
    result = spotcheck.check_sample(body, spotcheck.StepSample(0, leaves, tensors, META), 0, rerun(layer), net.config)
    assert result.passed and not result.bitwise and "within tolerance" in result.reason


def test_sampling_draws_about_the_configured_share_of_steps_unpredictably():
    proof_id = "ab" * 32
    picked = spotcheck.drawn_steps(b"salt-1", proof_id, 4000, 0.05, 10**6)
    assert 140 <= len(picked) <= 260 and picked == sorted(set(picked))
    other = spotcheck.drawn_steps(b"salt-2", proof_id, 4000, 0.05, 10**6)
    assert len(set(picked) & set(other)) < 40  # another verifier's salt draws other steps
    assert len(spotcheck.drawn_steps(b"salt-1", proof_id, 4000, 0.05, 3)) == 3  # at most the cap
    assert spotcheck.drawn_steps(b"salt-1", proof_id, 50, 1.0, 100) == list(range(50))


def test_bf16_steps_pass_with_the_bf16_bounds_and_lazy_ones_still_fail(net, layer):
    """A GPU prover computes under bf16 autocast; a CPU verifier re-runs in float32."""
    weights = {k: v.detach().clone() for k, v in layer.named_parameters()}
    honest = step_tensors(layer, weights, 3)
    honest["out.0"] = honest["out.0"].to(torch.bfloat16).to(torch.float32)
    noise = torch.Generator().manual_seed(9)
    honest.update({k: weights[k[2:]] + (v - weights[k[2:]]) * (1 + 0.05 * torch.randn(v.shape, generator=noise))
                   for k, v in honest.items() if k.startswith("a.")})
    noisy = {**honest, "out.0": torch.randn_like(honest["out.0"])}
    skipped = {**honest, **{"a." + k: v for k, v in weights.items()}}
    for tensors, bf16, should_pass in ((honest, False, False), (honest, True, True), (noisy, True, False),
                                       (skipped, True, False)):
        meta = {"bf16": bf16}
        leaves = (spotcheck.step_leaf(tensors, meta),)
        body = {"work_root": spotcheck.work_root(leaves).hex()}
        sample = spotcheck.StepSample(0, leaves, tensors, meta)
        assert spotcheck.check_sample(body, sample, 0, rerun(layer), net.config).passed is should_pass
