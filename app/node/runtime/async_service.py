"""AsyncService: a node too slow for a quorum (T5) trains snapshots and submits pseudo-gradients.

Each round it downloads the current weights of every stage from live holders (a snapshot of the
whole model, when it fits: async_mode.snapshot_fits), trains ``inner_steps`` batches on its own
data order in an executor (async_mode.AsyncTrainer, training-A's), and sends each stage's part of
the pseudo-gradient to every holder of that stage. The holders fold it into their next DiLoCo
round weighted by sqrt(batches) × freshness, the age counted from the snapshot (DESIGN.md §4).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable

from app.node.events import Event, StepDone
from app.node.model.architecture import ModelArchitecture
from app.node.p2p.errors import P2PError
from app.node.runtime import stage_protocol
from app.node.runtime.data_service import DataService
from app.node.runtime.network import NetworkService
from app.node.runtime.p2p_transport import P2PWeights, peer_id
from app.node.training.arch_guard import arch_tag
from app.node.training.async_mode import AsyncConfig, AsyncResult, AsyncTrainer
from app.node.training.compression import encode_pseudo_gradient
from app.node.training.config import TrainingConfig
from app.node.training.transport import RetryElsewhere

log = logging.getLogger("neuroshard.runtime.async")


class AsyncService:
    def __init__(self, net: NetworkService, arch: ModelArchitecture, config: TrainingConfig, data: DataService,
                 *, emit: Callable[[Event], None], activity: Callable[[str], None],
                 proceed: Callable[[], Awaitable[bool]], stop_requested: Callable[[], bool],
                 memory_budget_bytes: int, device: str = "cpu") -> None:
        self.net, self.arch, self.config, self.data = net, arch, config, data
        self.emit, self.activity, self.proceed, self.stop_requested = emit, activity, proceed, stop_requested
        self.memory = memory_budget_bytes
        self.device = device  # where snapshots train (the node's checked training device)
        self.rounds = 0
        self.tokens_total = 0
        self.losses: list[float] = []

    async def run(self, max_rounds: int | None) -> int:
        loader = self.data.open_loader(self.config.batch_size, min(self.config.seq_len, self.arch.max_seq))
        trainer = AsyncTrainer(self.arch, loader, node_id=self.net.node_id, memory_budget_bytes=self.memory,
                               config=AsyncConfig(steps=self.config.inner_steps, lr=self.config.lr,
                                                  weight_decay=self.config.weight_decay),
                               device=self.device)
        loop = asyncio.get_running_loop()
        gone_since: float | None = None
        while (max_rounds is None or self.rounds < max_rounds) and await self.proceed():
            bounds = await self._stages()
            if bounds is None:
                # The pipeline we trained for went away: wait a sync timeout for it, then stop
                # rather than hold a snapshot of a network that no longer exists.
                gone_since = gone_since or loop.time()
                if self.rounds and loop.time() - gone_since > self.config.sync_timeout_s:
                    self.activity("no pipeline nodes left; stopping async training")
                    break
                self.activity("waiting for pipeline nodes to take a snapshot from")
                await asyncio.sleep(1.0)
                continue
            gone_since = None
            self.activity("downloading layers")
            try:
                snapshot, parts = await self._snapshot(bounds)
            except RetryElsewhere:  # a holder left between the lookup and the download
                await asyncio.sleep(1.0)
                continue
            self.activity(f"training a snapshot offline (round {self.rounds + 1})")
            began = time.time()
            result = await loop.run_in_executor(None, functools.partial(
                trainer.train_round, snapshot, began, should_stop=self.stop_requested))
            await self._submit(result, parts)
            self._report(result, time.time() - began)
        return self.rounds

    async def _stages(self) -> list[tuple[int, int]] | None:
        ranges = set()
        for layer in range(self.arch.layers):
            ranges |= {(r.layer_start, r.layer_end) for r in await self.net.node.who_holds(layer)
                       if r.layer_start == layer}
        bounds, end = [], 0
        while end < self.arch.layers:
            nxt = [r for r in ranges if r[0] == end]
            if not nxt:
                return None
            bounds.append(max(nxt))
            end = bounds[-1][1]
        return bounds

    async def _snapshot(self, bounds: list[tuple[int, int]]) -> tuple[dict, dict[tuple[int, int], list[str]]]:
        weights = P2PWeights(self.net.node, arch=arch_tag(self.arch))
        snapshot, parts = {}, {}
        for layer_range in bounds:
            state = await weights.fetch(layer_range)
            snapshot.update(state)
            parts[layer_range] = sorted(state)
        return snapshot, parts

    async def _submit(self, result: AsyncResult, parts: dict[tuple[int, int], list[str]]) -> None:
        scheme = {"none": "fp32"}.get(self.config.compression, self.config.compression)
        contribution = result.contribution_at(time.time())
        for layer_range, names in parts.items():
            encoded = encode_pseudo_gradient({n: contribution.tensors[n] for n in names}, scheme)
            meta = stage_protocol.sync_request(layer_range, 0, contribution.batches, contribution.age_s,
                                               is_async=True, arch=arch_tag(self.arch))
            for record in await self.net.node.who_holds(layer_range[0]):
                if (record.layer_start, record.layer_end) != layer_range:
                    continue
                try:
                    await self.net.node.call_sync(record, meta, encoded, self.config.sync_timeout_s)
                except P2PError as exc:
                    log.info("holder %s did not take our pseudo-gradient: %s", peer_id(record)[:12], exc)

    def _report(self, result: AsyncResult, seconds: float) -> None:
        self.rounds += 1
        self.tokens_total += result.tokens
        loss = sum(result.losses) / len(result.losses) if result.losses else float("nan")
        if math.isfinite(loss):
            self.losses.append(loss)
        self.emit(StepDone(step=self.rounds, loss=loss, tokens_per_s=round(result.tokens / max(seconds, 1e-9), 1),
                           tokens_total=self.tokens_total, inner_step=len(result.losses),
                           inner_steps_per_sync=self.config.inner_steps))
