"""Verify-mode benchmark: how fast a lazy prover is caught, and what checking costs.

Prints one JSON object.

* detection: a lazy prover claims ``--phantom`` made-up steps for every step it ran (so a share
  f = phantom / (1 + phantom) of its committed steps is fake) and makes one training proof per
  epoch of ``--steps`` real steps. ``--verifiers`` staked verifiers each sample a proof with
  probability r (1 %, 5 %, 10 %) and re-run ``spot_check_steps`` committed steps of it; a failed
  check is refereed by the other verifiers on the same step, so it is confirmed (slash) whenever a
  second verifier exists. *computed*: P(caught within N epochs) = 1 - (1 - p)^N with
  p = 1 - (1 - r q)^V and q = the chance that the k re-run steps include a fake one (drawn without
  replacement). *measured*: ``--trials`` independent runs of the real sampling code
  (``spotcheck.should_check`` / ``sampled_steps`` on real proof ids and verifier ids) over N epochs,
  with every sampled step re-run through ``spotcheck.check_sample`` on real tiny-model weights
  (fake steps fail it, real steps pass it). Each prover trains one real epoch; every simulated
  epoch re-draws the sampling with a fresh proof id over those committed steps. Honest provers
  are run the same way: none may be slashed.
* overhead: prover compute for one epoch (``--steps`` real training steps of the tiny model:
  forward, backward, optimizer, plus the step log's copy of the weights) against the verifier's
  compute for the same epoch at 5 % sampling (the probability times one check: parsing the served
  sample, building the layers and re-running the forward). The ratio is the issue's "verifier
  compute / prover compute" (goal <= 0.1).

This runs in one process (no network): the devnet test (tests/economics/test_verify_mode.py)
shows the same code catching a lazy node over gRPC. Machine load changes the times but not the
ratio much, since both sides run here in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from app.node.economics import spotcheck  # noqa: E402
from app.node.economics.constants import EconomicsConfig  # noqa: E402
from app.node.model.architecture import ModelArchitecture  # noqa: E402
from app.node.runtime.verification import StepLog, forward_runner, parse_served  # noqa: E402
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
        self.stage = StageWorker(build_shard(ARCH, (0, ARCH.layers), with_embedding=True, with_head=True, seed=0),
                                 TRAINING, on_forward=self.log.on_forward)
        self.driver = PipelineDriver("prover", self.stage, [], None, micro_batches=TRAINING.micro_batches)
        self.step = 0

    def epoch(self, steps: int) -> tuple[dict, str]:
        """Trains ``steps`` steps; returns the proof body fields that matter and its id."""
        import asyncio

        samples = []
        for _ in range(steps):
            asyncio.run(self.driver.train_step(self.step, _batch(self.step)))
            samples += self.log.seal("prover", self.step)
            self.step += 1
        proof_id = random.randbytes(32).hex()
        self.log.publish(proof_id, 0, samples)
        return {"work_root": self.log.root(samples).hex()}, proof_id


def _check(prover: Prover, body: dict, proof_id: str, step: int, config: EconomicsConfig) -> bool:
    served = parse_served(prover.log.serve([json.dumps({"proof_id": proof_id, "step": step}).encode()]), step)
    assert served is not None
    return spotcheck.check_sample(body, served.sample, step, forward_runner(ARCH, served), config).passed


def computed(rate: float, steps: int, phantom: int, k: int, verifiers: int, epochs: int) -> float:
    leaves, fakes = steps * (1 + phantom), steps * phantom
    k = min(k, leaves)
    q = 1 - math.comb(leaves - fakes, k) / math.comb(leaves, k)  # at least one fake among k drawn
    if verifiers < 2:
        return 0.0  # one verifier alone never slashes (challenge_confirmations = 2)
    p = 1 - (1 - rate * q) ** verifiers
    return 1 - (1 - p) ** epochs


def measured(prover: Prover, rate: float, steps: int, verifiers: int, epochs: int, trials: int,
             config: EconomicsConfig, rng: random.Random) -> tuple[float, int]:
    """Share of trials in which the prover is slashed within ``epochs``; and checks run."""
    caught_trials = checks = 0
    cache: dict[str, tuple[dict, str]] = {}
    for _ in range(trials):
        ids = [rng.randbytes(32) for _ in range(verifiers)]
        caught = False
        for _epoch in range(epochs):
            if "proof" not in cache:
                cache["proof"] = prover.epoch(steps)  # one real epoch; its proof id is redrawn below
            body, proof_id = cache["proof"]
            draw_id = rng.randbytes(32).hex()  # a fresh proof id per epoch for the sampling draws
            leaves = len(prover.log._published[proof_id].leaves)
            failed_step = None
            for vid in ids:
                if not spotcheck.should_check(draw_id, vid, rate):
                    continue
                for step in spotcheck.sampled_steps(draw_id, vid, leaves, config.spot_check_steps):
                    checks += 1
                    if not _check(prover, body, proof_id, step, config):
                        failed_step = step
                        break
                if failed_step is not None:
                    break
            if failed_step is not None and verifiers >= 2:
                checks += 1  # a second verifier referees the same step
                caught = not _check(prover, body, proof_id, failed_step, config)
            if caught:
                break
        caught_trials += caught
    return caught_trials / trials, checks


def overhead(config: EconomicsConfig, steps: int, rate: float) -> dict:
    prover = Prover(config, phantom=0)
    prover.epoch(2)  # warm up
    start = time.perf_counter()
    body, proof_id = prover.epoch(steps)
    prover_s = time.perf_counter() - start
    leaves = len(prover.log._published[proof_id].leaves)
    start = time.perf_counter()
    for step in range(leaves):  # every step once, then per check
        reply = prover.log.serve([json.dumps({"proof_id": proof_id, "step": step}).encode()])
        served = parse_served(reply, step)
        assert spotcheck.check_sample(body, served.sample, step, forward_runner(ARCH, served), config).passed
    check_s = (time.perf_counter() - start) / leaves
    verifier_s = rate * config.spot_check_steps * check_s
    return {"steps_per_epoch": steps, "prover_s_per_epoch": round(prover_s, 4), "verifier_s_per_check": round(check_s, 4),
            "sampling_rate": rate, "verifier_s_per_epoch": round(verifier_s, 5),
            "ratio_verifier_vs_prover_compute": round(verifier_s / prover_s, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="real steps per epoch's proof")
    parser.add_argument("--phantom", type=int, default=1, help="made-up steps per real one (the lazy prover)")
    parser.add_argument("--verifiers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--trials", type=int, default=300)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = random.Random(5)
    config = EconomicsConfig.devnet()
    fake = args.phantom / (1 + args.phantom)
    detection = []
    lazy, honest = Prover(config, phantom=args.phantom), Prover(config, phantom=0)
    for rate in (0.01, 0.05, 0.10):
        caught, checks = measured(lazy, rate, args.steps, args.verifiers, args.epochs, args.trials, config, rng)
        honest_caught, _ = measured(honest, rate, args.steps, args.verifiers, args.epochs, args.trials, config, rng)
        detection.append({
            "sampling_rate": rate, "epochs": args.epochs, "fake_share_of_steps": round(fake, 3),
            "computed_p_caught": round(computed(rate, args.steps, args.phantom, config.spot_check_steps,
                                                args.verifiers, args.epochs), 4),
            "measured_p_caught": round(caught, 4), "trials": args.trials, "checks_run": checks,
            "honest_slashed": round(honest_caught * args.trials)})
    result = {"benchmark": "verify", "verifiers": args.verifiers, "spot_check_steps": config.spot_check_steps,
              "detection": detection, "overhead": overhead(config, args.steps, 0.05)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
