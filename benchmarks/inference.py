"""Inference benchmark on loopback; prints one JSON object.

A small model (8 layers x 256 hidden, max_seq 640) is split into 2 and into 4 stages, each served
by its own P2P node (real gRPC + TLS, signed session calls, one process; the stages compute on
this process's executor, so the figures show the protocol's cost, not parallel hardware). In the
same run, in-process ``model.generation.generate`` of the same weights is the baseline:

- ``tokens_per_s``: greedy generation through the network vs in process, with ``ratio``;
- decode tokens/s at prompt lengths 16 and 512 (the KV cache should keep them within 1.5x), both
  through each network and in process (``decode_16_over_512``, ``in_process_decode_16_over_512``);
- time to first token (prompt sent, first token sampled), through the network and in process;
- ``same_tokens``: whether the network's tokens equal the in-process ones;
- ``cache_append``: appending 1024 positions one at a time to a layer's key/value cache, the
  model's grown buffer against concatenating the whole cache per token (``concatenated_over_grown``);
- ``decode_by_cache``: in-process decode tokens/s at prompt 16 and 512 with either cache,
  64 tokens, interleaved, best of 5 (``grown_16_over_512`` is the 1.5x goal with the model's cache).

Field reference: Petals serves a 70B model at up to 6 tokens/s per session.

    .venv/bin/python benchmarks/inference.py [--tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.crypto.keys import PrivateKey  # noqa: E402
from app.node.model.architecture import ModelArchitecture  # noqa: E402
from app.node.model.generation import generate  # noqa: E402
from app.node.model.shard import ModelShard  # noqa: E402
from app.node.p2p.config import P2PConfig  # noqa: E402
from app.node.p2p.node import P2PNode  # noqa: E402
from app.node.p2p.records import LayerAnnouncement  # noqa: E402
from app.node.p2p.tracker import Tracker  # noqa: E402
from app.node.runtime.inference_client import RemoteGenerator  # noqa: E402
from app.node.runtime.inference_service import InferenceService  # noqa: E402
from app.node.training.config import TrainingConfig  # noqa: E402
from app.node.training.stage import StageWorker, build_shard  # noqa: E402

ARCH = ModelArchitecture(hidden=256, layers=8, heads=4, kv_heads=2, head_dim=64, ffn=1024, vocab=266, max_seq=640)
CONFIG = P2PConfig(heartbeat_interval_s=2.0, heartbeat_timeout_s=20.0, rpc_timeout_s=30.0, use_upnp=False)


def _split(stages: int) -> list[tuple[int, int]]:
    per = ARCH.layers // stages
    return [(i * per, (i + 1) * per) for i in range(stages)]


def _shard(layer_range: tuple[int, int]) -> ModelShard:
    return build_shard(ARCH, layer_range, with_embedding=layer_range[0] == 0,
                       with_head=layer_range[1] == ARCH.layers, seed=1)


@contextlib.asynccontextmanager
async def _network(stages: int) -> AsyncIterator[RemoteGenerator]:
    tracker = Tracker(0, config=CONFIG)
    await tracker.start()
    nodes = []
    try:
        for layer_range in _split(stages):
            stage = StageWorker(_shard(layer_range), TrainingConfig())
            node = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=CONFIG)
            node.set_inference_handler(InferenceService(lambda s=stage: s).handle)
            await node.start()
            await node.registry.announce(LayerAnnouncement(*layer_range, "T3", 1.0, ttl=CONFIG.heartbeat_timeout_s))
            nodes.append(node)
        client = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=CONFIG)
        await client.start()
        nodes.append(client)
        generator = RemoteGenerator(client, ARCH)
        for _ in range(200):
            try:
                await generator.plan()
                break
            except Exception:
                await asyncio.sleep(0.1)
        yield generator
    finally:
        for node in nodes:
            await node.stop()
        await tracker.stop()


def _prompt(length: int) -> list[int]:
    return [int(i) for i in torch.randint(0, 256, (length,), generator=torch.Generator().manual_seed(length))]


def _local(stages: list[ModelShard], prompt: list[int], tokens: int) -> tuple[list[int], float, float]:
    """(tokens, seconds for all, seconds to the first token) in process, from the same run."""
    first: list[float] = []
    began = time.perf_counter()
    out = generate(stages, prompt, tokens, temperature=0,
                   on_token=lambda i, _t: first.append(time.perf_counter() - began) if i == 0 else None)
    return out, time.perf_counter() - began, first[0]


async def _remote(generator: RemoteGenerator, prompt: list[int], tokens: int) -> tuple[list[int], float, float]:
    result = await generator.generate(prompt, tokens, temperature=0)
    return result.tokens, result.seconds, result.first_token_s


def _cache_append(positions: int = 1024, kv_heads: int = 8, head_dim: int = 128) -> dict:
    """Appending one position at a time to a layer's key/value cache, as decoding does: the
    model's LayerCache (a buffer grown by doubling) against concatenating the whole cache each
    time, in the same run. Seconds for ``positions`` appends of keys and values."""
    from app.node.model.layers import LayerCache

    rows = torch.randn(1, kv_heads, positions, head_dim)

    def grown() -> float:
        cache = LayerCache(max_positions=positions)
        began = time.perf_counter()
        for t in range(positions):
            cache.extend(rows[:, :, t:t + 1], rows[:, :, t:t + 1])
        return time.perf_counter() - began

    def concatenated() -> float:
        keys = values = rows[:, :, :0]
        began = time.perf_counter()
        for t in range(positions):
            keys, values = torch.cat((keys, rows[:, :, t:t + 1]), dim=2), torch.cat((values, rows[:, :, t:t + 1]), dim=2)
        return time.perf_counter() - began

    grow_s, cat_s = min(grown() for _ in range(3)), concatenated()  # the slow one once: it takes seconds
    return {"positions": positions, "kv_heads": kv_heads, "head_dim": head_dim, "grown_s": round(grow_s, 4),
            "concatenated_s": round(cat_s, 4), "concatenated_over_grown": round(cat_s / grow_s, 2)}


class _ConcatenatedCache:
    """The cache as it was before the grown buffer: the whole cache concatenated per token (the
    same-run baseline of ``decode_by_cache``)."""

    def __init__(self, max_positions: int | None = None) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys is None or self.values is None:
            self.keys, self.values = k, v
        else:
            self.keys, self.values = torch.cat((self.keys, k), dim=2), torch.cat((self.values, v), dim=2)
        return self.keys, self.values


def _decode_by_cache(tokens: int = 64, rounds: int = 5) -> dict:
    """In-process decode tokens/s at prompt 16 and 512 with the model's cache and with the
    concatenating one, interleaved, best of ``rounds`` (the least disturbed run on a shared machine)."""
    from app.node.model import shard as shard_module

    whole = [_shard((0, ARCH.layers))]
    grown = shard_module.LayerCache
    best: dict[str, float] = {}
    try:
        for _ in range(rounds):
            for name, cache in (("grown", grown), ("concatenated", _ConcatenatedCache)):
                shard_module.LayerCache = cache  # type: ignore[misc]
                for length in (16, 512):
                    marks: list[float] = []
                    generate(whole, _prompt(length), tokens, temperature=0,
                             on_token=lambda _i, _t, m=marks: m.append(time.perf_counter()))
                    rate = (len(marks) - 1) / (marks[-1] - marks[0])
                    best[f"{name}_{length}"] = max(best.get(f"{name}_{length}", 0.0), rate)
    finally:
        shard_module.LayerCache = grown  # type: ignore[misc]
    report: dict = {f"{k}_decode_tokens_per_s": round(v, 2) for k, v in best.items()}
    for name in ("grown", "concatenated"):
        report[f"{name}_16_over_512"] = round(best[f"{name}_16"] / best[f"{name}_512"], 3)
    return report


async def main(tokens: int) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    local_stages = [_shard(r) for r in _split(4)]
    report: dict = {"model": {"layers": ARCH.layers, "hidden": ARCH.hidden, "max_seq": ARCH.max_seq},
                    "tokens": tokens, "networks": {}}
    same = True
    for stages in (2, 4):
        async with _network(stages) as generator:
            entry: dict = {}
            for length in (16, 512):
                prompt = _prompt(length)
                # in the executor: the nodes' heartbeats keep running on this loop meanwhile
                want, local_s, local_first = await asyncio.get_running_loop().run_in_executor(
                    None, _local, local_stages, prompt, tokens)
                got, remote_s, remote_first = await _remote(generator, prompt, tokens)
                same = same and got == want
                # decode rate: the tokens after the first, over the time after the first
                entry[f"prompt_{length}"] = {
                    "tokens_per_s": round(len(got) / remote_s, 2),
                    "in_process_tokens_per_s": round(len(want) / local_s, 2),
                    "ratio": round((len(got) / remote_s) / (len(want) / local_s), 3),
                    "decode_tokens_per_s": round((len(got) - 1) / max(remote_s - remote_first, 1e-9), 2),
                    "in_process_decode_tokens_per_s": round((len(want) - 1) / max(local_s - local_first, 1e-9), 2),
                    "first_token_s": round(remote_first, 4),
                    "in_process_first_token_s": round(local_first, 4),
                }
            short, long = entry["prompt_16"], entry["prompt_512"]
            entry["decode_16_over_512"] = round(short["decode_tokens_per_s"] / long["decode_tokens_per_s"], 3)
            entry["in_process_decode_16_over_512"] = round(
                short["in_process_decode_tokens_per_s"] / long["in_process_decode_tokens_per_s"], 3)
            report["networks"][f"{stages}_stages"] = entry
    report["same_tokens"] = same
    report["cache_append"] = _cache_append()
    report["decode_by_cache"] = _decode_by_cache()
    report["field_reference"] = "Petals: a 70B model at up to 6 tokens/s per session"
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.tokens))))
