"""NeuroLLM model benchmark: prints one JSON object.

Measured in one process, against baselines run in the same process:
* training tokens/s (median step; best step too) of the whole model (ModelShard.full) and of the same model split into a
  4-stage in-process pipeline (activations detached at stage boundaries, gradients sent back
  by hand, one AdamW per stage), and the ratio pipeline / whole (goal >= 0.97) as the
  median of per-round ratios, which stays stable while other processes load the machine;
* the whole model against a plain single-file reference trainer written below (same shapes,
  nanoGPT style), ratio ours / reference (goal >= 1.0 on a GPU);
* memory with and without the savers (low-rank embedding/head, activation checkpointing):
  parameter + gradient + AdamW bytes, and bytes saved for backward (activations) counted with
  autograd's saved-tensor hooks, so the CPU figure is exact rather than a noisy RSS reading;
  on CUDA also torch.cuda.max_memory_allocated;
* on CUDA, 125M and 350M configurations in bf16 autocast with MFU.

Default run (CPU, 2 cores): about a minute. ``--help`` lists flags for bigger runs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.node.model.architecture import ModelArchitecture  # noqa: E402
from app.node.model.shard import ModelShard, lm_loss  # noqa: E402
from app.node.training.speed import SpeedPlan, apply_speed, autocast  # noqa: E402

H100_BF16_PEAK_FLOPS = 989e12
"""Dense bf16 peak of an H100 SXM (NVIDIA datasheet), the denominator of MFU."""


# -- a plain reference trainer (deliberately independent of app.node.model) -----------------------
class RefBlock(nn.Module):
    def __init__(self, a: ModelArchitecture) -> None:
        super().__init__()
        self.a = a
        self.n1, self.n2 = nn.RMSNorm(a.hidden, eps=a.norm_eps), nn.RMSNorm(a.hidden, eps=a.norm_eps)
        self.qkv = nn.Linear(a.hidden, (a.heads + 2 * a.kv_heads) * a.head_dim, bias=False)
        self.o = nn.Linear(a.hidden, a.hidden, bias=False)
        self.gate_up = nn.Linear(a.hidden, 2 * a.ffn, bias=False)
        self.down = nn.Linear(a.ffn, a.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        a, (b, t, _) = self.a, x.shape
        q, k, v = self.qkv(self.n1(x)).split([a.heads * a.head_dim, a.kv_heads * a.head_dim,
                                             a.kv_heads * a.head_dim], dim=-1)
        q = _ref_rope(q.view(b, t, a.heads, a.head_dim).transpose(1, 2), cos, sin)
        k = _ref_rope(k.view(b, t, a.kv_heads, a.head_dim).transpose(1, 2), cos, sin)
        v = v.view(b, t, a.kv_heads, a.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(y.transpose(1, 2).reshape(b, t, a.hidden))
        g, u = self.gate_up(self.n2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


def _ref_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class RefModel(nn.Module):
    def __init__(self, a: ModelArchitecture) -> None:
        super().__init__()
        self.emb = nn.Embedding(a.vocab, a.hidden)
        self.blocks = nn.ModuleList(RefBlock(a) for _ in range(a.layers))
        self.norm = nn.RMSNorm(a.hidden, eps=a.norm_eps)
        self.head = nn.Linear(a.hidden, a.vocab, bias=False)
        freqs = 1.0 / a.rope_theta ** (torch.arange(0, a.head_dim, 2).float() / a.head_dim)
        ang = torch.outer(torch.arange(a.max_seq).float(), freqs)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        x = self.emb(ids)
        for blk in self.blocks:
            x = blk(x, self.cos[:t], self.sin[:t])
        return self.head(self.norm(x))


# -- training steps ---------------------------------------------------------------------------------
def _adamw(params: list[nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, fused=device.type == "cuda")


def whole_step_fn(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], float]:
    opt = _adamw(list(model.parameters()), device)

    def step(batch: torch.Tensor) -> float:
        with autocast(device):
            loss = lm_loss(model(batch[:, :-1]), batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def pipeline_step_fn(stages: list[ModelShard], device: torch.device) -> Callable[[torch.Tensor], float]:
    opts = [_adamw(list(s.parameters()), device) for s in stages]

    def step(batch: torch.Tensor) -> float:
        inputs, outputs = [], []
        x = batch[:, :-1]
        with autocast(device):
            for stage in stages:
                if x.is_floating_point():  # a stage boundary: what the network would receive
                    x = x.detach().requires_grad_()
                inputs.append(x)
                x = stage(x)
                outputs.append(x)
            loss = lm_loss(outputs[-1], batch[:, 1:])
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for n in range(len(stages) - 2, -1, -1):
            outputs[n].backward(inputs[n + 1].grad)
        for opt in opts:
            opt.step()
        return loss.item()

    return step


def split(model: ModelShard, parts: int) -> list[ModelShard]:
    arch, layers = model.architecture, model.architecture.layers
    bounds = [round(i * layers / parts) for i in range(parts + 1)]
    stages = []
    for i in range(parts):
        s = ModelShard(arch, bounds[i], bounds[i + 1], with_embedding=i == 0, with_head=i == parts - 1)
        s.load_state_dict(model.state_dict(), strict=False)
        stages.append(s.to(next(model.parameters()).device))
    return stages


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_rounds(steps: dict[str, Callable[[torch.Tensor], float]], batch: torch.Tensor, warmup: int,
                rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step for each variant, one step of each variant per round in turn, so that
    load from other processes on a shared machine hits neighbouring samples alike."""
    for fn in steps.values():
        for _ in range(warmup):
            fn(batch)
    samples: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            fn(batch)
            _sync(device)
            samples[name].append(time.perf_counter() - t0)
    return samples


def paired_ratio(fast: list[float], slow: list[float]) -> float:
    """Median over rounds of slow_time / fast_time: a throughput ratio robust to load spikes."""
    return statistics.median(s / f for f, s in zip(fast, slow, strict=True))


# -- memory ------------------------------------------------------------------------------------------
def memory_profile(arch: ModelArchitecture, batch: torch.Tensor, device: torch.device,
                   low_rank: int | None, checkpoint: bool) -> dict[str, float]:
    torch.manual_seed(0)
    model = ModelShard.full(arch, low_rank=low_rank).to(device)
    apply_speed(model, SpeedPlan(checkpoint_activations=checkpoint))
    params = sum(p.numel() for p in model.parameters())
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_ptrs:
            saved[ptr] = max(saved.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    opt = _adamw(list(model.parameters()), device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(device):
        loss = lm_loss(model(batch[:, :-1]), batch[:, 1:])
    loss.backward()
    opt.step()
    out = {"params": params, "param_grad_adam_bytes": params * 16, "activation_bytes": sum(saved.values())}
    if device.type == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    return out


def memory_report(arch: ModelArchitecture, batch: torch.Tensor, device: torch.device, low_rank: int) -> dict:
    base = memory_profile(arch, batch, device, None, False)
    saver = memory_profile(arch, batch, device, low_rank, True)
    total = lambda m: m["param_grad_adam_bytes"] + m["activation_bytes"]  # noqa: E731
    return {"config": {"hidden": arch.hidden, "layers": arch.layers, "vocab": arch.vocab,
                       "batch": list(batch.shape), "low_rank": low_rank},
            "baseline": base, "with_savers": saver,
            "activation_ratio": saver["activation_bytes"] / base["activation_bytes"],
            "total_ratio": total(saver) / total(base)}


# -- configurations ------------------------------------------------------------------------------------
def cpu_arch(args: argparse.Namespace) -> ModelArchitecture:
    heads = args.hidden // 64
    return ModelArchitecture(hidden=args.hidden, layers=args.layers, heads=heads, kv_heads=max(1, heads // 2),
                             head_dim=64, ffn=256 * math.ceil(8 * args.hidden / 3 / 256), vocab=args.vocab,
                             max_seq=args.seq + 1)


GPU_CONFIGS = {
    # GPT-3 paper's 125M and 350M shapes (Brown et al. 2020, table 2.1), LLaMA-style blocks.
    "125M": dict(hidden=768, layers=12, heads=12, kv_heads=4, head_dim=64, ffn=2048),
    "350M": dict(hidden=1024, layers=24, heads=16, kv_heads=4, head_dim=64, ffn=2816),
}


def flops_per_token(arch: ModelArchitecture, seq: int) -> float:
    """6 N per token for the matmuls plus attention scores and values (PaLM appendix B)."""
    return 6 * (arch.param_count() - arch.embedding_param_count()) + 12 * arch.layers * arch.hidden * seq


def throughput(arch: ModelArchitecture, batch: torch.Tensor, device: torch.device, args: argparse.Namespace,
               parts: int) -> dict[str, float]:
    torch.manual_seed(0)
    whole = ModelShard.full(arch).to(device)
    ref = RefModel(arch).to(device)
    steps = {"whole": whole_step_fn(whole, device), "pipeline": pipeline_step_fn(split(whole, parts), device),
             "reference": whole_step_fn(ref, device)}
    t = time_rounds(steps, batch, args.warmup, args.rounds, device)
    tokens = batch.shape[0] * (batch.shape[1] - 1)
    out: dict[str, float] = {f"tokens_per_s_{k}": tokens / statistics.median(v) for k, v in t.items()}
    out |= {f"best_tokens_per_s_{k}": tokens / min(v) for k, v in t.items()}
    out["ratio_pipeline_over_whole"] = paired_ratio(t["pipeline"], t["whole"])
    out["ratio_whole_over_reference"] = paired_ratio(t["whole"], t["reference"])
    out["params"] = arch.param_count()
    return out


def gpu_section(args: argparse.Namespace) -> dict:
    device = torch.device("cuda")
    out = {"device": torch.cuda.get_device_name(), "dtype": "bf16 autocast", "compile": False}
    for name, shape in GPU_CONFIGS.items():
        arch = ModelArchitecture(**shape, vocab=args.gpu_vocab, max_seq=args.gpu_seq + 1)
        batch = torch.randint(0, arch.vocab, (args.gpu_batch, args.gpu_seq + 1), device=device)
        r = throughput(arch, batch, device, args, parts=4)
        fpt = flops_per_token(arch, args.gpu_seq)
        r["mfu_whole"] = r["tokens_per_s_whole"] * fpt / H100_BF16_PEAK_FLOPS
        r["mfu_reference"] = r["tokens_per_s_reference"] * fpt / H100_BF16_PEAK_FLOPS
        out[name] = r
        torch.cuda.empty_cache()
        if name == "125M":
            out["memory_125M"] = memory_report(arch, batch, device, low_rank=128)
            torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vocab", type=int, default=266)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=10, help="timed steps per variant (interleaved)")
    p.add_argument("--memory-vocab", type=int, default=16384,
                   help="vocabulary for the memory comparison (low rank matters once it has grown)")
    p.add_argument("--low-rank", type=int, default=64)
    p.add_argument("--gpu-batch", type=int, default=16)
    p.add_argument("--gpu-seq", type=int, default=1024)
    p.add_argument("--gpu-vocab", type=int, default=32000)
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--no-memory", action="store_true", help="skip the memory-saver comparison")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    cpu = torch.device("cpu")
    arch = cpu_arch(args)
    batch = torch.randint(0, arch.vocab, (args.batch, args.seq + 1))
    result: dict = {"benchmark": "model", "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu": {"config": {"hidden": arch.hidden, "layers": arch.layers, "vocab": arch.vocab,
                                       "batch": args.batch, "seq": args.seq, "stages": 4},
                            **throughput(arch, batch, cpu, args, parts=4)}}
    if not args.no_memory:
        mem_arch = arch.with_changes(vocab=args.memory_vocab)
        mem_batch = torch.randint(0, mem_arch.vocab, (args.batch, args.seq + 1))
        result["memory_cpu"] = memory_report(mem_arch, mem_batch, cpu, args.low_rank)
    if torch.cuda.is_available() and not args.no_gpu:
        result["gpu"] = gpu_section(args)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
