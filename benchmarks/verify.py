"""Verify-mode benchmark: how fast a lazy prover is caught, and what checking costs.

Prints one JSON object.

**The sampling unit is the committed step.** A training proof commits to every step of its epoch
(one leaf each); each verifier draws each committed step independently with probability r (the
``spot_check_rate``, 1 %, 5 %, 10 %) with a salt only it knows, and re-executes the drawn ones
(forward, backward and optimizer step, ``runtime/verification.py``). A failed step is refereed by
every other verifier on that same step, so with two or more verifiers a failed step is confirmed
(slash) and a forged fail refuted. Sampling per step rather than per proof is what makes the
verifier's work proportional to the prover's (it re-runs a share r of all steps) and makes the
chance of being caught grow with the number of steps a prover fakes, not with the number of
proofs it signs.

* detection: a lazy prover runs ``--steps`` real steps per epoch and claims ``--phantom`` made-up
  steps for each (their outputs are real, their backward and update skipped: the weights after
  are the weights before, which only re-executing the update catches). *computed*: with F fake
  steps per epoch and V verifiers, P(caught within N epochs) = 1 - (1 - r)^(F V N) (a fake step
  is caught when any verifier draws it; fewer than 2 verifiers never slash). *measured*:
  ``--trials`` runs of the real draw (``spotcheck.drawn_steps`` with fresh random salts and proof
  ids per epoch) over N epochs, where every committed step of a real epoch of the lazy prover
  (and of an honest prover) was re-executed once for real through ``check_sample`` and
  ``step_runner``; the trials reuse those verdicts (the outcome of re-running a step does not
  depend on who drew it). The table also shows how the figure depends on how many steps a lazy
  prover fakes: faking one step in ten epochs is hard to catch at any affordable rate.
* overhead: the prover's compute for one epoch (``--steps`` real training steps of the tiny
  model, with the step log's copies) against one verifier's compute at 5 % sampling (the rate
  times the cost of re-executing one step, fetch and parse included): the issue's "verifier
  compute / prover compute" (goal <= 0.1).

One process, no network: tests/economics/test_verify_mode.py (in one process over gRPC) and
tests/economics/test_devnet_verify.py (node processes) show the same code catching a lazy node.
Load changes the times; the ratio is measured in the same run. ``--devnet RATE`` instead runs one
real multi-process devnet (3 nodes: one lazy, two verify-mode) at that sampling rate and reports
the share of the lazy node's training proofs that were slashed (and any honest proof slashed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from app.node.economics import spotcheck  # noqa: E402
from app.node.economics.constants import EconomicsConfig  # noqa: E402
from app.node.model.architecture import ModelArchitecture  # noqa: E402
from app.node.runtime.verification import StepLog, parse_served, step_runner  # noqa: E402
from app.node.training.config import TrainingConfig  # noqa: E402
from app.node.training.pipeline import PipelineDriver  # noqa: E402
from app.node.training.stage import StageWorker, build_shard  # noqa: E402

ARCH = ModelArchitecture.tiny()
TRAINING = TrainingConfig.from_dict({"model": "tiny", "batch_size": 4, "micro_batches": 2, "seq_len": 32,
                                     "lr": 3e-3, "warmup_steps": 0, "decay_steps": 1000, "inner_steps": 1000})


def _batch(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (TRAINING.batch_size, TRAINING.seq_len + 1), generator=gen)


class Prover:
    """A real stage and step log; ``phantom`` > 0 makes it lazy."""

    def __init__(self, config: EconomicsConfig, phantom: int) -> None:
        self.log = StepLog(config, phantom_steps=phantom)
        shard = build_shard(ARCH, (0, ARCH.layers), with_embedding=True, with_head=True, seed=0)
        self.stage = StageWorker(shard, TRAINING, on_forward=self.log.on_forward, on_backward=self.log.on_backward,
                                 on_applied=self.log.on_applied)
        self.driver = PipelineDriver("prover", self.stage, [], None, micro_batches=TRAINING.micro_batches)
        self.step = 0

    def epoch(self, steps: int) -> tuple[dict, str, int]:
        """Trains ``steps`` steps; returns the proof body field that matters, its id and its leaves."""
        samples = []
        for _ in range(steps):
            asyncio.run(self.driver.train_step(self.step, _batch(self.step)))
            samples += self.log.seal("prover", self.step)
            self.step += 1
        proof_id = random.randbytes(32).hex()
        self.log.publish(proof_id, 0, samples)
        return {"work_root": self.log.root(samples).hex()}, proof_id, len(samples)


def _check(prover: Prover, body: dict, proof_id: str, step: int, config: EconomicsConfig) -> bool:
    """Serve, parse and re-execute one committed step, as a verifier does."""
    served = parse_served(list(prover.log.serve(proof_id, step)), step)
    assert served is not None
    run = step_runner(ARCH, TRAINING, served)
    return spotcheck.check_sample(body, served.sample, step, run, config).passed


def computed(rate: float, fakes_per_epoch: int, verifiers: int, epochs: int) -> float:
    if verifiers < 2:
        return 0.0  # one verifier alone never slashes (challenge_confirmations = 2)
    return 1 - (1 - rate) ** (fakes_per_epoch * verifiers * epochs)


def measured(verdicts: list[bool], rate: float, verifiers: int, epochs: int, trials: int, cap: int,
             rng: random.Random) -> tuple[float, int]:
    """Share of trials in which the prover is slashed within ``epochs`` (a drawn step whose
    verdict is a fail, confirmed by a second verifier), and the steps drawn."""
    caught_trials = drawn = 0
    for _ in range(trials):
        salts = [rng.randbytes(32) for _ in range(verifiers)]
        caught = False
        for _epoch in range(epochs):
            proof_id = rng.randbytes(32).hex()  # every epoch is a new proof, drawn afresh
            picks = [spotcheck.drawn_steps(salt, proof_id, len(verdicts), rate, cap) for salt in salts]
            drawn += sum(len(p) for p in picks)
            if verifiers >= 2 and any(not verdicts[step] for p in picks for step in p):
                caught = True
                break
        caught_trials += caught
    return caught_trials / trials, drawn


def overhead(config: EconomicsConfig, steps: int, rate: float) -> dict:
    prover = Prover(config, phantom=0)
    prover.epoch(2)  # warm up
    start = time.process_time()
    body, proof_id, leaves = prover.epoch(steps)
    prover_s = time.process_time() - start
    start = time.process_time()
    for step in range(leaves):  # every step once: the cost of one re-executed step
        assert _check(prover, body, proof_id, step, config)
    check_s = (time.process_time() - start) / leaves
    verifier_s = rate * leaves * check_s
    return {"steps_per_epoch": steps, "prover_cpu_s_per_epoch": round(prover_s, 4),
            "verifier_cpu_s_per_step_checked": round(check_s, 4), "sampling_rate": rate,
            "verifier_cpu_s_per_epoch": round(verifier_s, 5),
            "ratio_verifier_vs_prover_compute": round(verifier_s / prover_s, 4)}


def devnet(rate: float, steps: int, epoch_ms: int = 1000) -> dict:
    """A real multi-process devnet (3 nodes: the first lazy, the last two verify-mode): per
    training proof of the lazy node, was it slashed; and were any honest proofs. ``epoch_ms``:
    the devnet's 1 s epochs hold 1-2 steps per proof; longer ones hold as many as a real
    network's proofs do (the chance of catching a proof grows with the fake steps it holds)."""
    import tempfile

    from app.node.devnet import run_devnet
    from app.node.economics import replay
    from app.node.economics.constants import from_settings
    from app.node.economics.report import _records
    from app.node.runtime.devnet_funding import devnet_genesis_settings
    from app.wallet.keystore import Keystore

    economics = {"spot_check_rate": rate, "spot_check_steps": 64, "epoch_ms": epoch_ms,
                 "challenge_window_ms": max(10_000, 6 * epoch_ms)}
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_devnet(3, steps, workdir=Path(tmp), keep=True, timeout_s=900, verify_nodes=2, lazy_nodes=1,
                             economics_overrides=dict(economics),
                             training_overrides={"linger_s": 16.0 + 3 * epoch_ms / 1000})
        dirs = [Path(tmp) / f"node{i}" for i in range(3)]
        records = {r.record_id: r for d in dirs for r in _records(d / "ledger.sqlite")}
        state = replay.compute_state(records.values(), from_settings({**devnet_genesis_settings(), **economics}))
        addresses = [Keystore(d).address for d in dirs]
    statuses: dict[str, list[str]] = {a: [] for a in addresses}
    for record in records.values():
        if record.kind == "proof" and record.body["proof_kind"] == "training" and record.author_address in statuses:
            statuses[record.author_address].append(state.statuses[record.record_id][0])
    lazy, honest = statuses[addresses[0]], [s for a in addresses[1:] for s in statuses[a]]
    caught = lazy.count("slashed") / len(lazy) if lazy else 0.0
    return {"sampling_rate": rate, "training_steps": steps, "epoch_ms": epoch_ms, "lazy_proofs": len(lazy),
            "lazy_proofs_slashed": lazy.count("slashed"), "per_proof_p_caught": round(caught, 3),
            "p_caught_within_10_epochs_from_it": round(1 - (1 - caught) ** 10, 4),
            "honest_proofs": len(honest), "honest_proofs_slashed": honest.count("slashed"),
            "exit_codes": summary["exit_codes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="real steps per epoch's proof")
    parser.add_argument("--phantom", type=int, default=1, help="made-up steps per real one (the lazy prover)")
    parser.add_argument("--verifiers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--devnet", type=float, default=None, metavar="RATE",
                        help="instead: one multi-process devnet with a lazy node at this sampling rate")
    parser.add_argument("--devnet-steps", type=int, default=60)
    parser.add_argument("--devnet-epoch-ms", type=int, default=1000, help="the devnet's PoNW epoch length")
    args = parser.parse_args()
    if args.devnet is not None:
        print(json.dumps({"benchmark": "verify-devnet", **devnet(args.devnet, args.devnet_steps, args.devnet_epoch_ms),
                          "machine": {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)}}))
        return
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = random.Random(5)
    config = EconomicsConfig.devnet()
    cap = 10**6  # no cap: every drawn step is re-run (the config's spot_check_steps bounds a huge proof)
    lazy, honest = Prover(config, phantom=args.phantom), Prover(config, phantom=0)
    lazy_body, lazy_id, lazy_leaves = lazy.epoch(args.steps)
    honest_body, honest_id, honest_leaves = honest.epoch(args.steps)
    lazy_verdicts = [_check(lazy, lazy_body, lazy_id, s, config) for s in range(lazy_leaves)]
    honest_verdicts = [_check(honest, honest_body, honest_id, s, config) for s in range(honest_leaves)]
    fakes = lazy_verdicts.count(False)
    detection = []
    for rate in (0.01, 0.05, 0.10):
        caught, drawn = measured(lazy_verdicts, rate, args.verifiers, args.epochs, args.trials, cap, rng)
        honest_caught, _ = measured(honest_verdicts, rate, args.verifiers, args.epochs, args.trials, cap, rng)
        detection.append({
            "sampling_rate": rate, "epochs": args.epochs, "fake_steps_per_epoch": fakes,
            "committed_steps_per_epoch": lazy_leaves,
            "computed_p_caught": round(computed(rate, fakes, args.verifiers, args.epochs), 4),
            "measured_p_caught": round(caught, 4), "trials": args.trials, "steps_drawn": drawn,
            "honest_slashed_trials": round(honest_caught * args.trials),
            "computed_p_caught_by_fakes_per_epoch": {str(f): round(computed(rate, f, args.verifiers, args.epochs), 4)
                                                     for f in (1, 4, 16, 64)}})
    result = {"benchmark": "verify", "verifiers": args.verifiers, "sampling_unit": "committed step",
              "checked_for_real": {"lazy_steps_failed": fakes, "lazy_steps": lazy_leaves,
                                   "honest_steps_passed": honest_verdicts.count(True), "honest_steps": honest_leaves},
              "detection": detection, "overhead": overhead(config, args.steps, 0.05),
              "machine": {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2), "torch_threads": 1}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
