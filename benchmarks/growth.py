"""Grown versus from scratch on the genesis corpus (issue #16): prints one JSON object.

Same run, same data order, same optimiser settings:
* grown: the small shape trains ``--small-steps`` steps, is grown with model/growth.py
  (``grow_to``: width then depth, function-preserving) to the large shape, and trains on for
  ``--grown-steps`` steps (a fresh AdamW after growth);
* scratch: the large shape trains from its initial weights for small + grown steps (the same
  tokens in total).

Reported: held-out loss curves (every ``--eval-every`` steps, on windows of the corpus the
training never reads: the loader's other share), the scratch run's final loss, the tokens each
run needs to first reach it (the grown run counts its small phase), their ratio (issue goal
<= 0.6), and the loss jump at the moment of growth (goal: float noise).
Default run: a few minutes on 2 loaded CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.node.data.bundled import load_bundled_manifest, open_bundled_store  # noqa: E402
from app.node.data.loader import BatchLoader  # noqa: E402
from app.node.model.architecture import ModelArchitecture  # noqa: E402
from app.node.model.growth import grow_to  # noqa: E402
from app.node.model.shard import ModelShard, lm_loss  # noqa: E402
from app.node.training.upgrade import plan_upgrade  # noqa: E402

SMALL = ModelArchitecture.tiny()
LARGE_CANDIDATE = SMALL.with_changes(hidden=128, heads=8, kv_heads=4, ffn=512, layers=6)


def _loaders(data_dir: Path, batch: int, seq: int) -> tuple[BatchLoader, list[tuple[torch.Tensor, torch.Tensor]]]:
    store, manifest = open_bundled_store(data_dir), load_bundled_manifest()
    train = BatchLoader(store, manifest, batch_size=batch, seq_len=seq, seed=1, share=(0, 2))
    held = BatchLoader(store, manifest, batch_size=batch, seq_len=seq, seed=2, share=(1, 2))
    return train, [held.next_batch() for _ in range(4)]


def _held_out(model: ModelShard, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    with torch.no_grad():
        loss = sum(float(lm_loss(model(x), y)) for x, y in batches) / len(batches)
    model.train()
    return loss


def _train(model: ModelShard, batches: list[tuple[torch.Tensor, torch.Tensor]], held: list, lr: float,
           eval_every: int, start_step: int, tokens_per_step: int) -> list[tuple[int, float]]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    curve = []
    for i, (x, y) in enumerate(batches, start=1):
        loss = lm_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if i % eval_every == 0 or i == len(batches):
            curve.append(((start_step + i) * tokens_per_step, round(_held_out(model, held), 5)))
    return curve


def _tokens_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((tokens for tokens, loss in curve if loss <= target), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-steps", type=int, default=200)
    parser.add_argument("--grown-steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=25)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # on a loaded 2-core machine more threads thrash (5 s a step instead of 60 ms)
    plan = plan_upgrade(SMALL, LARGE_CANDIDATE)
    assert plan is not None
    tokens_per_step = args.batch * args.seq
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train, held = _loaders(Path(tmp), args.batch, args.seq)
        data = [train.next_batch() for _ in range(args.small_steps + args.grown_steps)]
    torch.manual_seed(0)
    small = ModelShard(SMALL, 0, SMALL.layers, with_embedding=True, with_head=True)
    grown_curve = _train(small, data[:args.small_steps], held, args.lr, args.eval_every, 0, tokens_per_step)
    before = _held_out(small, held)
    torch.manual_seed(1)
    grown = grow_to(small, plan.target)
    after = _held_out(grown, held)
    grown_curve += _train(grown, data[args.small_steps:], held, args.lr, args.eval_every, args.small_steps,
                          tokens_per_step)
    torch.manual_seed(0)
    scratch = ModelShard(plan.target, 0, plan.target.layers, with_embedding=True, with_head=True)
    scratch_curve = _train(scratch, data, held, args.lr, args.eval_every, 0, tokens_per_step)
    final = scratch_curve[-1][1]
    grown_tokens = _tokens_to_reach(grown_curve, final)
    scratch_tokens = _tokens_to_reach(scratch_curve, final)
    print(json.dumps({
        "small": {"layers": SMALL.layers, "hidden": SMALL.hidden, "parameters": SMALL.param_count()},
        "large": {"layers": plan.target.layers, "hidden": plan.target.hidden, "parameters": plan.target.param_count()},
        "tokens_total": len(data) * tokens_per_step, "tokens_before_growth": args.small_steps * tokens_per_step,
        "loss_jump_at_growth": {"before": round(before, 6), "after": round(after, 6),
                                "relative": abs(after - before) / before},
        "scratch_final_loss": final, "grown_final_loss": grown_curve[-1][1],
        "tokens_to_reach_scratch_final": {"grown": grown_tokens, "scratch": scratch_tokens},
        "grown_over_scratch_tokens": (round(grown_tokens / scratch_tokens, 3)
                                      if grown_tokens and scratch_tokens else None),
        "goal_ratio": 0.6,
        "curves": {"grown": grown_curve, "scratch": scratch_curve},
        "seconds": round(time.perf_counter() - started, 1),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
