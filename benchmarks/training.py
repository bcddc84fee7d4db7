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

    def loaders(self) -> list[BatchLoader]:
        """Replica i reads share (i, R+1); share R is held out for scoring."""
        return [BatchLoader(self.store, self.store.manifest, batch_size=self.batch_size, seq_len=self.seq_len,
                            seed=1, share=(i, self.replicas + 1)) for i in range(self.replicas)]

    def model(self) -> ModelShard:
        m = ModelShard.full(self.arch)
        m.load_state_dict(self.init)
        return m

    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=0.0)


def make_setup(data_dir: Path, replicas: int, batch_size: int, seq_len: int, lr: float) -> Setup:
    torch.manual_seed(0)
    arch = ModelArchitecture.tiny()
    store = open_bundled_store(data_dir)
    held = BatchLoader(store, store.manifest, batch_size=16, seq_len=seq_len, seed=7,
                       share=(replicas, replicas + 1))
    init = {k: v.clone() for k, v in ModelShard.full(arch).state_dict().items()}
    return Setup(arch, store, replicas, batch_size, seq_len, lr, init, [held.next_batch() for _ in range(4)])


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


def run_dp(setup: Setup, steps: int) -> dict[str, Any]:
    model, loaders = setup.model(), setup.loaders()
    opt = setup.optimizer(model)
    began = time.perf_counter()
    for _ in range(steps):
        batches = [lo.next_batch() for lo in loaders]
        train_step(model, opt, (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])))
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
    try:
        from app.node import devnet  # training-B's module; optional until it lands
    except ImportError as exc:
        return {"skipped": f"app.node.devnet is not available ({exc})"}
    bench = getattr(devnet, "benchmark_pipeline", None)
    if bench is None:
        return {"skipped": "app.node.devnet has no benchmark_pipeline(stages, steps) entry point yet"}
    return bench(stages=4, steps=args.pipeline_steps)


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="inner AdamW lr (DP uses the same)")
    p.add_argument("--steps", type=int, default=300, help="steps of the DiLoCo/DP comparison")
    p.add_argument("--inner-steps", type=int, default=100, help="DiLoCo H of the comparison")
    p.add_argument("--schemes", default="fp32,int8", help="pseudo-gradient encodings to train with")
    p.add_argument("--robust-steps", type=int, default=60)
    p.add_argument("--robust-inner-steps", type=int, default=20)
    p.add_argument("--pipeline-steps", type=int, default=20)
    p.add_argument("--skip", default="", help="comma list of parts to skip: diloco,robustness,pipeline")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--full", action="store_true", help="1000 steps, every scheme, longer robustness runs")
    args = p.parse_args()
    if args.full:
        args.steps, args.schemes, args.robust_steps = 1000, "fp32,bf16,int8", 200
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    began = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "training", "model": "tiny", "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        setup = make_setup(Path(tmp), args.replicas, args.batch_size, args.seq_len, args.lr)
        result["params"] = param_count(setup.model())
        if "diloco" not in skip:
            result["diloco_vs_dp"] = diloco_vs_dp(setup, args.steps, args.inner_steps, args.schemes.split(","))
        if "robustness" not in skip:
            result["robustness"] = robustness(setup, args.robust_steps, args.robust_inner_steps)
    if "pipeline" not in skip:
        result["pipeline"] = pipeline(args)
    result["seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
