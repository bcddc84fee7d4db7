"""INL-LLM (seed 003) against the standard block, measured in one run: prints one JSON object.

On the bundled genesis corpus (training windows from one half, held-out windows from the other):

* ``training``: a transformer and an INL model of the same hidden size and depth, the INL FFN
  narrowed so both have the same parameters (``params``), trained on the same batches in turn
  (equal tokens), one step of each per round so machine load hits both alike. Reported: held-out
  loss curve, median training tokens/s and their ratio, and the bytes autograd saves for backward
  (saved-tensor hooks) per training step, also for INL with activation checkpointing.
* ``inference``: the trained INL model generates greedily through a KV cache with and without
  adaptive early stopping: tokens/s, ratio, mean integration steps per block, and how many tokens
  the two runs agree on; the trained transformer's tokens/s for scale.
* ``low_rank``: the low-rank embedding and head (rank max(64, hidden / 8), seed 003) against the
  full ones: parameter saving at the genesis vocabulary (266) and at 32k, for this benchmark's
  shape and for the genesis shape (hidden 512), and the held-out loss effect of training with it
  at both vocabularies (the corpus has only genesis token ids, so at 32k the extra rows are
  never targets: it measures the cost of the factorisation, not a 32k tokenizer).

Default run: a few minutes on 2 loaded cores. ``--help`` lists the sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.node.data.bundled import open_bundled_store  # noqa: E402
from app.node.data.loader import BatchLoader  # noqa: E402
from app.node.model.architecture import GENESIS_VOCAB, INL_CONTROLLER_HIDDEN, ModelArchitecture  # noqa: E402
from app.node.model.generation import generate, inference_stats  # noqa: E402
from app.node.model.shard import ModelShard, lm_loss  # noqa: E402
from app.node.training.speed import SpeedPlan, apply_speed  # noqa: E402

Batch = tuple[torch.Tensor, torch.Tensor]


def transformer_arch(args: argparse.Namespace, vocab: int = GENESIS_VOCAB) -> ModelArchitecture:
    heads = args.hidden // 32
    return ModelArchitecture(hidden=args.hidden, layers=args.layers, heads=heads, kv_heads=max(1, heads // 2),
                             head_dim=32, ffn=3 * args.hidden, vocab=vocab, max_seq=args.seq + args.generate + 8)


def inl_arch_with_equal_params(base: ModelArchitecture, iterations: int) -> ModelArchitecture:
    """Same hidden size and depth; the GELU FFN narrowed so a block has the transformer's parameters."""
    h, c = base.hidden, INL_CONTROLLER_HIDDEN
    integrator = 3 * h * c + c + c * 4 * h + 4 * h + 2 * h + h * h
    ffn = round((3 * h * base.ffn - integrator) / (2 * h))
    return base.with_changes(block_type="inl", inl_iterations=iterations, ffn=ffn)


def low_rank_for(hidden: int) -> int:
    """Seed 003's rank: max(64, hidden / 8), kept below hidden."""
    return min(hidden - 1, max(64, hidden // 8))


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def saved_bytes(model: ModelShard, batch: Batch) -> int:
    """Bytes autograd keeps for backward in one training forward (parameters excluded)."""
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            saved[ptr] = max(saved.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lm_loss(model(batch[0]), batch[1])
    return sum(saved.values())


@torch.no_grad()
def held_out_loss(model: ModelShard, held: list[Batch]) -> float:
    model.eval()
    with model.adaptive_stopping(False):  # the loss of the model as trained, all steps
        loss = sum(float(lm_loss(model(x), y)) for x, y in held) / len(held)
    model.train()
    return loss


class Run:
    """One model, its optimiser, its per-step times and its held-out curve."""

    def __init__(self, arch: ModelArchitecture, low_rank: int | None, lr: float, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = ModelShard.full(arch, low_rank=low_rank)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.0)
        self.times: list[float] = []
        self.curve: list[tuple[int, float]] = []

    def step(self, batch: Batch) -> None:
        t0 = time.perf_counter()
        loss = lm_loss(self.model(batch[0]), batch[1])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.times.append(time.perf_counter() - t0)

    def report(self, tokens_per_step: int) -> dict:
        return {"params": params(self.model), "loss_curve": self.curve,
                "final_held_out_loss": self.curve[-1][1],
                "tokens_per_s": tokens_per_step / statistics.median(self.times)}


def train_together(runs: dict[str, Run], loader: BatchLoader, held: list[Batch], steps: int, every: int) -> None:
    """Every run sees the same batches (equal tokens); one step of each per round."""
    for run in runs.values():
        run.curve.append((0, round(held_out_loss(run.model, held), 4)))
    for step in range(1, steps + 1):
        batch = loader.next_batch()
        for run in runs.values():
            run.step(batch)
        if step % every == 0 or step == steps:
            for run in runs.values():
                run.curve.append((step, round(held_out_loss(run.model, held), 4)))


def training_section(args: argparse.Namespace, loader: BatchLoader,
                     held: list[Batch]) -> tuple[dict, dict[str, Run]]:
    base = transformer_arch(args)
    inl = inl_arch_with_equal_params(base, args.iterations)
    rank = low_rank_for(args.hidden)
    runs = {"transformer": Run(base, None, args.lr), "inl": Run(inl, None, args.lr),
            "transformer_low_rank": Run(base, rank, args.lr)}
    train_together(runs, loader, held, args.steps, args.eval_every)
    tokens = args.batch * args.seq
    out = {name: run.report(tokens) for name, run in runs.items()}
    probe = held[0]
    memory = {"transformer": saved_bytes(runs["transformer"].model, probe),
              "inl": saved_bytes(runs["inl"].model, probe)}
    ckpt = ModelShard.full(inl)
    ckpt.load_state_dict(runs["inl"].model.state_dict())
    apply_speed(ckpt, SpeedPlan(checkpoint_activations=True))
    memory["inl_checkpointed"] = saved_bytes(ckpt, probe)
    return {"config": {"transformer": base.to_dict(), "inl": inl.to_dict(), "steps": args.steps,
                       "tokens_per_step": tokens, "lr": args.lr},
            **{k: v for k, v in out.items() if k != "transformer_low_rank"},
            "ratio_inl_over_transformer_tokens_per_s": out["inl"]["tokens_per_s"] / out["transformer"]["tokens_per_s"],
            "ratio_inl_over_transformer_held_out_loss":
                out["inl"]["final_held_out_loss"] / out["transformer"]["final_held_out_loss"],
            "saved_activation_bytes_per_step": memory,
            "ratio_inl_over_transformer_activation_bytes": memory["inl"] / memory["transformer"],
            "ratio_inl_checkpointed_over_inl_activation_bytes": memory["inl_checkpointed"] / memory["inl"]}, runs


def inference_section(model: ModelShard, transformer: ModelShard, held: list[Batch], new_tokens: int,
                      prompts: int) -> dict:
    model.eval()
    transformer.eval()
    prompt_ids = [held[i % len(held)][0][i // len(held)][:8].tolist() for i in range(prompts)]
    t0 = time.perf_counter()
    for p in prompt_ids:
        generate([transformer], p, new_tokens, temperature=0)
    out: dict = {"transformer_tokens_per_s": prompts * new_tokens / (time.perf_counter() - t0)}
    texts: dict[bool, list[list[int]]] = {}
    for adaptive in (False, True, False, True):  # twice each, interleaved; the second pair is timed
        model.reset_inference_stats()
        t0 = time.perf_counter()
        texts[adaptive] = [generate([model], p, new_tokens, temperature=0, adaptive_stop=adaptive)
                           for p in prompt_ids]
        elapsed = time.perf_counter() - t0
        key = "adaptive_stop" if adaptive else "all_iterations"
        out[key] = {"tokens_per_s": prompts * new_tokens / elapsed,
                    "mean_iterations_per_block": inference_stats([model]).get("mean_iterations")}
    same = sum(a == b for x, y in zip(texts[True], texts[False], strict=True) for a, b in zip(x, y, strict=True))
    out["max_iterations"] = model.architecture.inl_iterations
    out["ratio_adaptive_over_all_tokens_per_s"] = out["adaptive_stop"]["tokens_per_s"] / out["all_iterations"]["tokens_per_s"]
    out["greedy_tokens_agreeing"] = f"{same}/{prompts * new_tokens}"
    out["ratio_inl_adaptive_over_transformer_tokens_per_s"] = \
        out["adaptive_stop"]["tokens_per_s"] / out["transformer_tokens_per_s"]
    return out


def embedding_params(arch: ModelArchitecture, low_rank: int | None) -> int:
    m = ModelShard(arch, 0, 0, with_embedding=True, with_head=True, low_rank=low_rank)
    return params(m.embedding) + params(m.head)


def low_rank_section(args: argparse.Namespace, loader: BatchLoader, held: list[Batch], genesis_run: Run,
                     transformer_report: dict) -> dict:
    out: dict = {"rank_rule": "max(64, hidden / 8)"}
    genesis_shape = ModelArchitecture.genesis()
    for label, arch in (("this_shape", transformer_arch(args)), ("genesis_shape_512", genesis_shape)):
        row = {}
        for vocab in (GENESIS_VOCAB, 32000):
            a = arch.with_changes(vocab=vocab)
            rank = low_rank_for(a.hidden)
            full, low = embedding_params(a, None), embedding_params(a, rank)
            row[str(vocab)] = {"rank": rank, "embedding_and_head_params": full, "low_rank_params": low,
                               "saving": 1 - low / full, "model_saving": (full - low) / a.param_count()}
        out[f"params_{label}"] = row
    out["loss_at_266"] = {"full": transformer_report["final_held_out_loss"],
                          "low_rank": genesis_run.curve[-1][1],
                          "ratio_low_rank_over_full": genesis_run.curve[-1][1] / transformer_report["final_held_out_loss"]}
    big = transformer_arch(args, vocab=32000)
    runs = {"full": Run(big, None, args.lr), "low_rank": Run(big, low_rank_for(args.hidden), args.lr)}
    train_together(runs, loader, held, args.steps_32k, args.steps_32k)
    tokens = args.batch * args.seq
    out["loss_at_32000"] = {k: {"final_held_out_loss": r.curve[-1][1], "tokens_per_s": r.report(tokens)["tokens_per_s"]}
                            for k, r in runs.items()}
    out["loss_at_32000"]["steps"] = args.steps_32k
    out["loss_at_32000"]["ratio_low_rank_over_full"] = runs["low_rank"].curve[-1][1] / runs["full"].curve[-1][1]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--iterations", type=int, default=10, help="INL integration steps (seed 003: 5-15)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=300, help="training steps per model (equal tokens)")
    p.add_argument("--steps-32k", type=int, default=60, help="training steps of the 32k-vocabulary pair")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--held-out-batches", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--generate", type=int, default=32, help="tokens generated per prompt")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads (1: these matrices are too small to gain from more on a loaded machine)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_bundled_store(tmp)
        loader = BatchLoader(store, store.manifest, batch_size=args.batch, seq_len=args.seq, seed=1, share=(0, 2))
        held_loader = BatchLoader(store, store.manifest, batch_size=args.batch, seq_len=args.seq, seed=7,
                                  share=(1, 2))
        held = [held_loader.next_batch() for _ in range(args.held_out_batches)]
        training, runs = training_section(args, loader, held)
        result = {"benchmark": "inl", "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "training": training}
        result["inference"] = inference_section(runs["inl"].model, runs["transformer"].model, held,
                                                args.generate, args.prompts)
        result["low_rank"] = low_rank_section(args, loader, held, runs["transformer_low_rank"],
                                              training["transformer"])
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
