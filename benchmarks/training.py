"""Training benchmark: prints one JSON object.

Everything is measured in one run against a baseline run in the same process, on the tiny model
and the bundled genesis corpus (every replica reads its own data share; a held-out share scores
the final loss):

* ``diloco_vs_dp``: R simulated replicas train on the same tokens (a) with synchronous data
  parallelism, every step's gradients averaged (computed as one step on the R batches together,
  which is the same average), each replica sending its full fp32 gradient every step (the
  minimum any all-reduce sends; a ring sends 2(R−1)/R times that), and (b) with DiLoCo (H inner
  steps, outer Nesterov SGD, app/node/training/diloco.py) sending one pseudo-gradient per round
  in fp32, bf16 or int8 with error feedback (compression.py). Both arms use the production inner
  optimiser (InnerAdamW, betas 0.9/0.95, gradient clip 1.0) at the same constant lr, take the same
  number of inner steps from the same pre-trained start, and are scored on the same held-out
  tokens, also after every outer round (``loss_curve``). Reported: bytes per token and final
  held-out loss of each, and the ratios against data parallel (goal: ≥ 100× fewer bytes at
  H = 100 with final loss within 2 %).
* ``robustness``: 1 of 4 replicas poisons its pseudo-gradient (×100, sign-flipped ×10, random
  noise at 5× an honest norm, below the norm filter); final loss against the clean run, with the production
  aggregation (validation + weighted trimmed mean) and with a naive plain mean (no norm filter).
* ``pipeline``: tokens/s of a multi-process devnet on loopback against one process (training-B's
  ``app.node.devnet``), or ``{"skipped": why}``.

Why the comparison needs several rounds and a pre-trained start (measured here, tiny model, R = 4,
H = 100, same tokens): while the loss falls fast DiLoCo trails data parallel by a roughly constant
lag of one to two rounds of progress, so its final-loss ratio depends on where on the curve it is
read. From a 200-step start: 3 rounds gave 1.05–1.07× for every outer setting tried (lr 0.5–1.2,
momentum 0–0.9, inner lr 1.5e-3–6e-3); 10 rounds 1.04× with outer lr 0.7 / momentum 0.9 (1.05×
with 1.0 / 0.9, 1.07× with a plain average, 1.0 / 0). From a 1000-step start, 10 rounds: 1.003×
(0.998× with another data order); 30 rounds (``--full``): 0.988× fp32, 0.992× bf16 and int8.
The DiLoCo paper likewise starts from a synchronously pre-trained checkpoint and runs hundreds of
rounds; its outer lr 0.7 / momentum 0.9 stayed the best setting here, so the defaults are kept.

Default run: about 5 minutes of CPU (8.6 minutes on 2 cores shared with other work). Torch runs
on one thread: on a shared 2-core box two threads per process spin against each other and run
several times slower. ``--full`` runs 30 rounds with every compression scheme.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.node.data.bundled import open_bundled_store  # noqa: E402
from app.node.data.loader import BatchLoader  # noqa: E402
from app.node.data.store import ShardStore  # noqa: E402
from app.node.model.architecture import ModelArchitecture  # noqa: E402
from app.node.model.shard import ModelShard, lm_loss  # noqa: E402
from app.node.training.aggregation import Contribution, aggregate  # noqa: E402
from app.node.training.compression import (  # noqa: E402
    ErrorFeedback,
    decode_pseudo_gradient,
    encode_pseudo_gradient,
    encoded_nbytes,
)
from app.node.training.diloco import DiLoCoConfig, DiLoCoReplica  # noqa: E402
from app.node.training.inner_optim import InnerAdamW  # noqa: E402

ATTACKS = ("scaled_x100", "sign_flip", "random")

GRAD_CLIP = 1.0
"""Global gradient-norm clip of every inner step, the production default (TrainingConfig.grad_clip)."""

HELD_OUT_BATCHES = 16
"""Held-out batches of 16 × seq_len scored for every reported loss: 8192 tokens at seq_len 32, so
the final-loss ratio is not the noise of one small batch (4 batches moved it by ~0.5 %)."""


@dataclass
class Setup:
    arch: ModelArchitecture
    store: ShardStore
    replicas: int
    batch_size: int
    seq_len: int
    lr: float
    init: dict[str, torch.Tensor]
    held_out: list[tuple[torch.Tensor, torch.Tensor]]
    grad_clip: float = GRAD_CLIP

    def loaders(self, seed: int = 1) -> list[BatchLoader]:
        """Replica i reads share (i, R+1); share R is held out for scoring."""
        return [BatchLoader(self.store, self.store.manifest, batch_size=self.batch_size, seq_len=self.seq_len,
                            seed=seed, share=(i, self.replicas + 1)) for i in range(self.replicas)]

    def model(self) -> ModelShard:
        m = ModelShard.full(self.arch)
        m.load_state_dict(self.init)
        return m

    def optimizer(self, model: torch.nn.Module) -> InnerAdamW:
        """The production inner optimiser (stage.py: InnerAdamW, betas 0.9/0.95), no weight decay."""
        return InnerAdamW(list(model.parameters()), lr=self.lr, weight_decay=0.0)


def make_setup(data_dir: Path, replicas: int, batch_size: int, seq_len: int, lr: float,
               warmup_steps: int) -> Setup:
    """The shared start. With ``warmup_steps`` every run starts from a model pre-trained by data
    parallel on a different data order, as the DiLoCo paper starts from a pre-trained checkpoint
    (its runs begin after 24k synchronous steps): local steps from a random init diverge most."""
    torch.manual_seed(0)
    arch = ModelArchitecture.tiny()
    store = open_bundled_store(data_dir)
    held = BatchLoader(store, store.manifest, batch_size=16, seq_len=seq_len, seed=7,
                       share=(replicas, replicas + 1))
    init = {k: v.clone() for k, v in ModelShard.full(arch).state_dict().items()}
    setup = Setup(arch, store, replicas, batch_size, seq_len, lr, init,
                  [held.next_batch() for _ in range(HELD_OUT_BATCHES)])
    if warmup_steps > 0:
        model = setup.model()
        _train_dp(setup, model, warmup_steps, seed=2)
        setup.init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return setup


def eval_loss(setup: Setup, model: torch.nn.Module) -> float:
    with torch.no_grad():
        return sum(float(lm_loss(model(x), y)) for x, y in setup.held_out) / len(setup.held_out)


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_step(model: torch.nn.Module, opt: InnerAdamW, batch: tuple[torch.Tensor, torch.Tensor], clip: float = GRAD_CLIP) -> None:
    loss = lm_loss(model(batch[0]), batch[1])
    opt.zero_grad()
    loss.backward()
    _clip_grad_norm(model, clip)
    opt.step()


def _clip_grad_norm(model: torch.nn.Module, max_norm: float) -> None:
    """Scale all gradients down together when their global L2 norm exceeds ``max_norm``, as a
    stage does before each inner step (torch's clip_grad_norm_ would import torch._dynamo)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    if norm > max_norm:
        for g in grads:
            g.mul_(max_norm / (norm + 1e-6))


def _train_dp(setup: Setup, model: torch.nn.Module, steps: int, seed: int = 1, every: int = 0) -> list[float]:
    """Data parallel: one step on the R replicas' batches together; the held-out loss every
    ``every`` steps (none when 0)."""
    loaders, opt, curve = setup.loaders(seed), setup.optimizer(model), []
    for step in range(1, steps + 1):
        batches = [lo.next_batch() for lo in loaders]
        train_step(model, opt, (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])))
        if every and step % every == 0:
            curve.append(eval_loss(setup, model))
    return curve


def run_dp(setup: Setup, steps: int, every: int) -> dict[str, Any]:
    model = setup.model()
    began = time.perf_counter()
    curve = _train_dp(setup, model, steps, every=every)
    tokens = steps * setup.replicas * setup.batch_size * setup.seq_len
    sent = steps * setup.replicas * param_count(model) * 4
    return {"final_loss": eval_loss(setup, model), "tokens": tokens, "bytes_sent": sent,
            "bytes_per_token": sent / tokens, "loss_curve": _curve(curve),
            "seconds": time.perf_counter() - began}


def poison(kind: str, honest: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    if kind == "scaled_x100":
        return {k: v * 100 for k, v in honest.items()}
    if kind == "sign_flip":
        return {k: -v * 10 for k, v in honest.items()}
    noise = {k: torch.randn(v.shape, generator=gen) for k, v in honest.items()}
    # 5x an honest norm: under the 10x norm filter, so only the trimming can stop it
    return {k: n * (5 * honest[k].norm() / n.norm().clamp_min(1e-12)) for k, n in noise.items()}


def run_diloco(setup: Setup, steps: int, config: DiLoCoConfig, *, scheme: str = "fp32",
               method: str = "trimmed_mean", attack: str | None = None, norm_filter: bool = True,
               curve: bool = False) -> dict[str, Any]:
    """DiLoCo with R replicas; with ``attack`` the last replica poisons instead of training
    (it mirrors replica 0's honest pseudo-gradient and distorts it, a well-informed attacker).
    With ``curve`` the held-out loss after every outer step is reported too."""
    inner = config.inner_steps
    honest = setup.replicas - (1 if attack else 0)
    first = setup.model()
    models = [first] + [copy.deepcopy(first) for _ in range(honest - 1)]
    opts = [setup.optimizer(m) for m in models]
    reps = [DiLoCoReplica(m, config) for m in models]
    feedback = [ErrorFeedback() if scheme != "fp32" else None for _ in range(setup.replicas)]
    loaders, gen = setup.loaders(), torch.Generator().manual_seed(5)
    sent, rejected, losses, began = 0, [], [], time.perf_counter()
    for _ in range(steps // inner):
        for model, opt, loader, rep in zip(models, opts, loaders, reps, strict=False):
            for _ in range(inner):
                train_step(model, opt, loader.next_batch())
                rep.record_inner_step()
        pseudo = [r.pseudo_gradient() for r in reps]
        if attack:
            pseudo.append(poison(attack, pseudo[0], gen))
        contributions = []
        for i, pg in enumerate(pseudo):
            wire = encode_pseudo_gradient(pg, scheme, feedback[i])
            sent += encoded_nbytes(wire)
            contributions.append(Contribution(f"r{i}", decode_pseudo_gradient(wire, scheme), inner))
        result = aggregate(contributions, method=method, norm_outlier_factor=10.0 if norm_filter else math.inf)
        rejected += [who for who, _ in result.rejected]
        for rep in reps:
            rep.apply_outer(result.tensors)
        if curve:
            losses.append(eval_loss(setup, models[0]))
    tokens = (steps // inner) * inner * setup.replicas * setup.batch_size * setup.seq_len
    out = {"final_loss": eval_loss(setup, models[0]), "tokens": tokens, "bytes_sent": sent,
           "bytes_per_token": sent / tokens, "rejected": len(rejected), "seconds": time.perf_counter() - began}
    if curve:
        out["loss_curve"] = _curve(losses)
    return out


def diloco_vs_dp(setup: Setup, steps: int, config: DiLoCoConfig, schemes: list[str]) -> dict[str, Any]:
    """Both arms on the same tokens from the same start with the same inner optimiser, lr and
    clip; DP takes ``steps`` steps on R batches, each DiLoCo replica ``steps`` steps on one. Loss
    curves are held-out losses at every outer-round boundary (every H steps) of both arms."""
    dp = run_dp(setup, steps, every=config.inner_steps)
    out: dict[str, Any] = {"replicas": setup.replicas, "steps": steps, "inner_steps": config.inner_steps,
                           "outer_rounds": steps // config.inner_steps, "outer_lr": config.outer_lr,
                           "outer_momentum": config.outer_momentum, "inner_lr": setup.lr,
                           "held_out_tokens": sum(y.numel() for _, y in setup.held_out),
                           "start_loss": eval_loss(setup, setup.model()), "data_parallel": _rounded(dp)}
    for scheme in schemes:
        d = run_diloco(setup, steps, config, scheme=scheme, method="mean", curve=True)
        d["bytes_ratio_vs_dp"] = dp["bytes_per_token"] / d["bytes_per_token"]
        d["loss_ratio_vs_dp"] = d["final_loss"] / dp["final_loss"]
        out[f"diloco_{scheme}"] = _rounded(d)
    return out


def robustness(setup: Setup, steps: int, config: DiLoCoConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"replicas": setup.replicas, "poisoned": 1, "steps": steps,
                           "inner_steps": config.inner_steps}
    for label, method, norm_filter in (("trimmed_mean", "trimmed_mean", True), ("plain_mean", "mean", False)):
        clean = run_diloco(setup, steps, config, method=method, norm_filter=norm_filter)
        row: dict[str, Any] = {"clean_loss": round(clean["final_loss"], 4)}
        for attack in ATTACKS:
            r = run_diloco(setup, steps, config, method=method, attack=attack, norm_filter=norm_filter)
            row[attack] = {"final_loss": round(r["final_loss"], 4),
                           "loss_ratio_vs_clean": round(r["final_loss"] / clean["final_loss"], 4),
                           "rejected_contributions": r["rejected"]}
        out[label] = row
    return out


def pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """A 4-stage devnet (4 node processes, one layer each, on loopback) against the same model
    and batch trained in this process. Throughput is the driver's steady state: tokens between
    its step events after ``PIPELINE_WARM_STEPS`` steps over the time between them, so process
    start-up, joining and the first (slow) steps count for neither side."""
    try:
        from app.node.devnet import DevnetError, devnet_training, run_devnet
    except ImportError as exc:
        return {"skipped": f"app.node.devnet is not available ({exc})"}
    steps = max(args.pipeline_steps, PIPELINE_WARM_STEPS + 3)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            summary = run_devnet(4, steps, workdir=Path(tmp), keep=True, inner_steps=10 * steps,
                                 timeout_s=args.pipeline_timeout, training_overrides={"max_layers_per_node": 1})
        except DevnetError as exc:
            return {"skipped": f"the devnet failed: {exc}"}
        drivers = [name for name, n in summary["layer_assignment"].items() if "driver" in (n.get("roles") or [])]
        if not drivers:
            return {"skipped": "the devnet elected no driver", "summary_errors": summary.get("errors")}
        devnet_tps = _steady_tokens_per_s(Path(tmp) / f"{drivers[0]}.events")
    training = devnet_training(4, steps)
    local_tps = _one_process_tokens_per_s(training["batch_size"], training["seq_len"], training["lr"], steps)
    stages = sorted({tuple(n["layers"]) for n in summary["layer_assignment"].values() if n.get("layers")})
    return {"nodes": 4, "stages": len(stages), "steps": steps, "batch": [training["batch_size"], training["seq_len"]],
            "micro_batches": training["micro_batches"], "devnet_tokens_per_s": round(devnet_tps, 1),
            "one_process_tokens_per_s": round(local_tps, 1), "efficiency": round(devnet_tps / local_tps, 4),
            "loss_start": summary["loss_start"], "loss_end": summary["loss_end"],
            "all_weights_agree": summary["all_weights_agree"], "bytes_sent": summary["bytes_sent"],
            "cores": os.cpu_count()}


PIPELINE_WARM_STEPS = 3
"""Driver steps left out of the steady-state rate (first steps build caches and connections)."""


def _steady_tokens_per_s(events: Path) -> float:
    steps = []
    for line in events.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("event") == "step":
            steps.append((float(e["timestamp"]), int(e["tokens_total"])))
    if len(steps) <= PIPELINE_WARM_STEPS + 1:
        raise RuntimeError(f"the driver logged only {len(steps)} steps in {events}")
    (t0, n0), (t1, n1) = steps[PIPELINE_WARM_STEPS], steps[-1]
    return (n1 - n0) / (t1 - t0)


def _one_process_tokens_per_s(batch_size: int, seq_len: int, lr: float, steps: int) -> float:
    model = ModelShard.full(ModelArchitecture.tiny())
    opt = InnerAdamW(list(model.parameters()), lr=lr)
    x = torch.randint(0, 256, (batch_size, seq_len + 1), generator=torch.Generator().manual_seed(0))
    for _ in range(PIPELINE_WARM_STEPS):
        train_step(model, opt, (x[:, :-1], x[:, 1:]))
    began = time.perf_counter()
    for _ in range(steps - PIPELINE_WARM_STEPS):
        train_step(model, opt, (x[:, :-1], x[:, 1:]))
    return (steps - PIPELINE_WARM_STEPS) * batch_size * seq_len / (time.perf_counter() - began)


def _curve(losses: list[float]) -> list[float]:
    return [round(v, 4) for v in losses]


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}


def one_process_parts(args: argparse.Namespace, skip: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        setup = make_setup(Path(tmp), args.replicas, args.batch_size, args.seq_len, args.lr, args.warmup_steps)
        out["params"] = param_count(setup.model())
        if "diloco" not in skip:
            config = DiLoCoConfig(inner_steps=args.inner_steps, outer_lr=args.outer_lr,
                                  outer_momentum=args.outer_momentum)
            out["diloco_vs_dp"] = diloco_vs_dp(setup, args.steps, config, args.schemes.split(","))
        if "robustness" not in skip:
            config = DiLoCoConfig(inner_steps=args.robust_inner_steps, outer_lr=args.outer_lr,
                                  outer_momentum=args.outer_momentum)
            out["robustness"] = robustness(setup, args.robust_steps, config)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="inner AdamW lr (DP uses the same)")
    p.add_argument("--steps", type=int, default=1000, help="steps of the DiLoCo/DP comparison (H=100: 10 rounds)")
    p.add_argument("--inner-steps", type=int, default=100, help="DiLoCo H of the comparison")
    p.add_argument("--outer-lr", type=float, default=DiLoCoConfig.outer_lr, help="outer Nesterov SGD lr")
    p.add_argument("--outer-momentum", type=float, default=DiLoCoConfig.outer_momentum)
    p.add_argument("--schemes", default="fp32,int8", help="pseudo-gradient encodings to train with")
    p.add_argument("--warmup-steps", type=int, default=1000, help="data-parallel pre-training shared by all runs")
    p.add_argument("--robust-steps", type=int, default=60)
    p.add_argument("--robust-inner-steps", type=int, default=20)
    p.add_argument("--pipeline-steps", type=int, default=20)
    p.add_argument("--pipeline-timeout", type=float, default=300.0, help="seconds before the devnet is stopped")
    p.add_argument("--skip", default="", help="comma list of parts to skip: diloco,robustness,pipeline")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--full", action="store_true", help="3000 steps (30 rounds), every scheme, longer robustness runs")
    args = p.parse_args()
    if args.full:
        args.steps, args.schemes, args.robust_steps = 3000, "fp32,bf16,int8", 200
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    began = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "training", "model": "tiny", "threads": args.threads,
                              "warmup_steps": args.warmup_steps}
    if not {"diloco", "robustness"} <= skip:
        result.update(one_process_parts(args, skip))
    if "pipeline" not in skip:
        result["pipeline"] = pipeline(args)
    result["seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
