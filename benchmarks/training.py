"""Training benchmark: prints one JSON object.

Everything is measured in one run against a baseline run in the same process, on the tiny model
and the bundled genesis corpus (every replica reads its own data share; a held-out share scores
the final loss):

* ``diloco_vs_dp``: R simulated replicas train on the same tokens (a) with synchronous data
  parallelism, every step's gradients averaged (computed as one step on the R batches together,
  which is the same average), each replica sending its full fp32 gradient every step (the
  minimum any all-reduce sends; a ring sends 2(R−1)/R times that), and (b) with DiLoCo (H inner
  AdamW steps, outer Nesterov SGD 0.7/0.9, app/node/training/diloco.py) sending one pseudo-
  gradient per round in fp32, bf16 or int8 with error feedback (compression.py). Reported: bytes
  per token and final held-out loss of each, and the ratios against data parallel
  (goal: ≥ 100× fewer bytes at H = 100 with final loss within 2 %).
* ``robustness``: 1 of 4 replicas poisons its pseudo-gradient (×100, sign-flipped ×10, random
  noise at 5× an honest norm, below the norm filter); final loss against the clean run, with the production
  aggregation (validation + weighted trimmed mean) and with a naive plain mean (no norm filter).
* ``pipeline``: tokens/s of a multi-process devnet on loopback against one process (training-B's
  ``app.node.devnet``), or ``{"skipped": why}``.

Default run: about 2–3 minutes on 2 idle cores (torch on one thread: on a shared 2-core box two
threads per process spin against each other and run several times slower). ``--full`` runs a
longer DiLoCo comparison with every compression scheme.
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

ATTACKS = ("scaled_x100", "sign_flip", "random")


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

    def loaders(self, seed: int = 1) -> list[BatchLoader]:
        """Replica i reads share (i, R+1); share R is held out for scoring."""
        return [BatchLoader(self.store, self.store.manifest, batch_size=self.batch_size, seq_len=self.seq_len,
                            seed=seed, share=(i, self.replicas + 1)) for i in range(self.replicas)]

    def model(self) -> ModelShard:
        m = ModelShard.full(self.arch)
        m.load_state_dict(self.init)
        return m

    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=0.0)


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
    setup = Setup(arch, store, replicas, batch_size, seq_len, lr, init, [held.next_batch() for _ in range(4)])
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


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    loss = lm_loss(model(batch[0]), batch[1])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _train_dp(setup: Setup, model: torch.nn.Module, steps: int, seed: int = 1) -> None:
    loaders, opt = setup.loaders(seed), setup.optimizer(model)
    for _ in range(steps):
        batches = [lo.next_batch() for lo in loaders]
        train_step(model, opt, (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])))


def run_dp(setup: Setup, steps: int) -> dict[str, Any]:
    model = setup.model()
    began = time.perf_counter()
    _train_dp(setup, model, steps)
    tokens = steps * setup.replicas * setup.batch_size * setup.seq_len
    sent = steps * setup.replicas * param_count(model) * 4
    return {"final_loss": eval_loss(setup, model), "tokens": tokens, "bytes_sent": sent,
            "bytes_per_token": sent / tokens, "seconds": time.perf_counter() - began}


def poison(kind: str, honest: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    if kind == "scaled_x100":
        return {k: v * 100 for k, v in honest.items()}
    if kind == "sign_flip":
        return {k: -v * 10 for k, v in honest.items()}
    noise = {k: torch.randn(v.shape, generator=gen) for k, v in honest.items()}
    # 5x an honest norm: under the 10x norm filter, so only the trimming can stop it
    return {k: n * (5 * honest[k].norm() / n.norm().clamp_min(1e-12)) for k, n in noise.items()}


def run_diloco(setup: Setup, steps: int, inner: int, *, scheme: str = "fp32", method: str = "trimmed_mean",
               attack: str | None = None, norm_filter: bool = True) -> dict[str, Any]:
    """DiLoCo with R replicas; with ``attack`` the last replica poisons instead of training
    (it mirrors replica 0's honest pseudo-gradient and distorts it, a well-informed attacker)."""
    honest = setup.replicas - (1 if attack else 0)
    first = setup.model()
    models = [first] + [copy.deepcopy(first) for _ in range(honest - 1)]
    opts = [setup.optimizer(m) for m in models]
    config = DiLoCoConfig(inner_steps=inner)
    reps = [DiLoCoReplica(m, config) for m in models]
    feedback = [ErrorFeedback() if scheme != "fp32" else None for _ in range(setup.replicas)]
    loaders, gen = setup.loaders(), torch.Generator().manual_seed(5)
    sent, rejected, began = 0, [], time.perf_counter()
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
    tokens = (steps // inner) * inner * setup.replicas * setup.batch_size * setup.seq_len
    return {"final_loss": eval_loss(setup, models[0]), "tokens": tokens, "bytes_sent": sent,
            "bytes_per_token": sent / tokens, "rejected": len(rejected), "seconds": time.perf_counter() - began}


def diloco_vs_dp(setup: Setup, steps: int, inner: int, schemes: list[str]) -> dict[str, Any]:
    dp = run_dp(setup, steps)
    out: dict[str, Any] = {"replicas": setup.replicas, "steps": steps, "inner_steps": inner,
                           "start_loss": eval_loss(setup, setup.model()), "data_parallel": _rounded(dp)}
    for scheme in schemes:
        d = run_diloco(setup, steps, inner, scheme=scheme, method="mean")
        d["bytes_ratio_vs_dp"] = dp["bytes_per_token"] / d["bytes_per_token"]
        d["loss_ratio_vs_dp"] = d["final_loss"] / dp["final_loss"]
        out[f"diloco_{scheme}"] = _rounded(d)
    return out


def robustness(setup: Setup, steps: int, inner: int) -> dict[str, Any]:
    out: dict[str, Any] = {"replicas": setup.replicas, "poisoned": 1, "steps": steps, "inner_steps": inner}
    for label, method, norm_filter in (("trimmed_mean", "trimmed_mean", True), ("plain_mean", "mean", False)):
        clean = run_diloco(setup, steps, inner, method=method, norm_filter=norm_filter)
        row: dict[str, Any] = {"clean_loss": round(clean["final_loss"], 4)}
        for attack in ATTACKS:
            r = run_diloco(setup, steps, inner, method=method, attack=attack, norm_filter=norm_filter)
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
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    x = torch.randint(0, 256, (batch_size, seq_len + 1), generator=torch.Generator().manual_seed(0))
    for _ in range(PIPELINE_WARM_STEPS):
        train_step(model, opt, (x[:, :-1], x[:, 1:]))
    began = time.perf_counter()
    for _ in range(steps - PIPELINE_WARM_STEPS):
        train_step(model, opt, (x[:, :-1], x[:, 1:]))
    return (steps - PIPELINE_WARM_STEPS) * batch_size * seq_len / (time.perf_counter() - began)


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}


def one_process_parts(args: argparse.Namespace, skip: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        setup = make_setup(Path(tmp), args.replicas, args.batch_size, args.seq_len, args.lr, args.warmup_steps)
        out["params"] = param_count(setup.model())
        if "diloco" not in skip:
            out["diloco_vs_dp"] = diloco_vs_dp(setup, args.steps, args.inner_steps, args.schemes.split(","))
        if "robustness" not in skip:
            out["robustness"] = robustness(setup, args.robust_steps, args.robust_inner_steps)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="inner AdamW lr (DP uses the same)")
    p.add_argument("--steps", type=int, default=300, help="steps of the DiLoCo/DP comparison")
    p.add_argument("--inner-steps", type=int, default=100, help="DiLoCo H of the comparison")
    p.add_argument("--schemes", default="fp32,int8", help="pseudo-gradient encodings to train with")
    p.add_argument("--warmup-steps", type=int, default=200, help="data-parallel pre-training shared by all runs")
    p.add_argument("--robust-steps", type=int, default=60)
    p.add_argument("--robust-inner-steps", type=int, default=20)
    p.add_argument("--pipeline-steps", type=int, default=20)
    p.add_argument("--pipeline-timeout", type=float, default=300.0, help="seconds before the devnet is stopped")
    p.add_argument("--skip", default="", help="comma list of parts to skip: diloco,robustness,pipeline")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--full", action="store_true", help="1000 steps, every scheme, longer robustness runs")
    args = p.parse_args()
    if args.full:
        args.steps, args.schemes, args.robust_steps = 1000, "fp32,bf16,int8", 200
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
