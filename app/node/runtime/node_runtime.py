"""NodeRuntime: what a node does between the engine's start and stop.

The composition root (assembly.py) builds the node's parts in three phases, each a frozen object
(parts.py): the base (identity, network, economy, vocabulary), the measured capacity (device,
tier, modes) and, once joined, the whole node with its job (a pipeline stage held by a
StageHost, or async snapshot training). This class runs the job, stops the parts, and hands
commands to whichever part answers them; status, queries and ``run_summary.json`` are
status.py's. The engine drives it through the Runtime protocol (runtime_api.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from app.node.events import Command, ErrorOccurred, Generate, NodeState, Query, QuoteGeneration, SetModes
from app.node.model.architecture import ModelArchitecture
from app.node.runtime.assembly import assemble, measure_capacity, open_base
from app.node.runtime.data_service import DataService
from app.node.runtime.economy_link import EconomyLink
from app.node.runtime.generation_service import GenerationService, NodeView
from app.node.runtime.network import NetworkService
from app.node.runtime.parts import AsyncJob, Capacity, NodeBase, NodeParts, PipelineJob
from app.node.runtime.status import StepSink, answer_query, summary, watch_pause, write_summary
from app.node.runtime_api import RuntimeContext
from app.node.training.config import TrainingConfig
from app.node.training.stage import StageWorker
from app.node.training.sync import StageSync
from app.node.training.trainer import NodeTrainer


class NodeRuntime:
    def __init__(self, ctx: RuntimeContext, step_sinks: Sequence[StepSink] = ()) -> None:
        """``step_sinks``: told every step this node applied (off the loop thread), after the economy."""
        self.ctx = ctx
        self._step_sinks = tuple(step_sinks)
        # The engine builds the runtime before the loop runs it; the parts come in phases in run().
        self._base: NodeBase | None = None
        self._capacity: Capacity | None = None
        self._parts: NodeParts | None = None
        self._steps_done = 0
        self._openai: Any = None  # the local completions endpoint, when [inference] turns it on

    # --- what the engine and tools read ------------------------------------------------------
    @property
    def steps_done(self) -> int:
        return self._steps_done

    @property
    def device(self) -> str:
        return self._capacity.device if self._capacity is not None else "cpu"

    @property
    def offer(self) -> tuple[str, int]:
        """(tier, whole layers that fit): what this node advertises."""
        return (self._capacity.tier, self._capacity.layers_fit) if self._capacity is not None else ("", 0)

    @property
    def arch(self) -> ModelArchitecture:
        if self._base is not None:
            return self._base.architecture()
        return TrainingConfig.from_dict(self.ctx.config.training).architecture()

    @property
    def net(self) -> NetworkService | None:
        return self._base.net if self._base is not None else None

    @property
    def economy(self) -> EconomyLink | None:
        return self._base.economy if self._base is not None else None

    @property
    def data(self) -> DataService | None:
        return self._parts.data if self._parts is not None else None

    @property
    def stage(self) -> StageWorker | None:
        job = self._parts.job if self._parts is not None else None
        return job.host.stage if isinstance(job, PipelineJob) else None

    @property
    def trainer(self) -> NodeTrainer | None:
        job = self._parts.job if self._parts is not None else None
        return job.trainer if isinstance(job, PipelineJob) else None

    @property
    def sync(self) -> StageSync | None:
        job = self._parts.job if self._parts is not None else None
        return job.host.sync if isinstance(job, PipelineJob) else None

    def summary(self) -> dict[str, Any]:
        return summary(self._base, self._parts, self._activity_text())

    def write_summary(self) -> None:
        write_summary(self.ctx.config.data_dir, self.summary())

    def _activity_text(self) -> str:
        return self._base.activity.text if self._base is not None else ""

    # --- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> int:
        self._base = base = await open_base(self.ctx, self._step_sinks)
        self._capacity = await measure_capacity(base)
        self._parts = parts = await assemble(base, self._capacity)
        await self._start_openai_endpoint()
        max_steps = self.ctx.config.max_steps
        if max_steps == 0:
            base.activity("started; --max-steps 0 so stopping")
            return 0
        if isinstance(parts.job, AsyncJob):
            self.ctx.set_state(NodeState.TRAINING, "async")
            self._steps_done = await parts.job.service.run(max_steps)
            self.write_summary()
            return 0
        job = parts.job
        self.ctx.set_state(NodeState.TRAINING, "+".join(job.host.assignment.roles))
        pause_watch = asyncio.ensure_future(watch_pause(self.ctx.control, self.ctx.set_state))
        try:
            self._steps_done = await job.trainer.run(max_steps)
            await job.host.finish()
        finally:
            pause_watch.cancel()
            if job.heal is not None:
                await job.heal.stop()
            if job.upgrades is not None:
                await job.upgrades.stop()
                with contextlib.suppress(Exception):  # drivers that stopped to migrate: hear why before leaving
                    await job.upgrades.check()
        base.activity("finished; staying a moment for peers")
        await self.ctx.control.sleep(base.training.linger_s)
        self.write_summary()
        return 0

    async def shutdown(self) -> None:
        """Leave the network first (fast), then save what run() did not (only when cancelled)."""
        if self._openai is not None:
            await self._openai.stop()
        job = self._parts.job if self._parts is not None else None
        if isinstance(job, PipelineJob) and job.heal is not None:
            await job.heal.stop()
        if isinstance(job, PipelineJob) and job.upgrades is not None:
            await job.upgrades.stop()
        if self._base is not None:
            await self._base.economy.stop()
            await self._base.vocab.stop()
            await self._base.net.stop()
        if isinstance(job, PipelineJob):
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(None, job.trainer.checkpoint)
            self.write_summary()

    # --- commands ------------------------------------------------------------------------------
    async def handle(self, command: Command) -> Any:
        if isinstance(command, SetModes):
            if self._capacity is None:
                raise ValueError("the node is still starting; try again in a moment")
            # Switching between pipeline and async takes effect at the next start (layers move then).
            return await asyncio.get_running_loop().run_in_executor(None, self._capacity.modes.set,
                                                                    tuple(command.modes))
        if isinstance(command, (Generate, QuoteGeneration)) or (isinstance(command, Query)
                                                                and command.what == "model_state"):
            return await self._try_model(command)
        if self._base is not None and self._base.economy.handles(command):
            return await self._base.economy.handle(command)
        if isinstance(command, Query):
            return await answer_query(command.what, self._base, self._parts, self._activity_text())
        raise ValueError(f"this node does not handle the command {command.name!r}")

    def _generation(self) -> GenerationService:
        """Generation with the node as it is now (runtime/generation_service.py)."""
        base = self._base
        if base is None:
            raise ValueError("the node is still starting; try again in a moment")
        return GenerationService(NodeView(
            architecture=base.architecture, tokenizer=lambda: base.vocab.tokenizer, stage=lambda: self.stage,
            sync=lambda: self.sync, p2p=lambda: base.net.node if self._parts is not None else None,
            economy=lambda: base.economy.service, emit=self.ctx.emit))

    async def _start_openai_endpoint(self) -> None:
        """The optional completions endpoint on 127.0.0.1 (``[inference] openai_endpoint``)."""
        limits = self.ctx.config.inference
        if not limits.openai_endpoint:
            return
        try:
            from app.node.runtime.openai_endpoint import OpenAIEndpoint
        except ImportError as exc:  # aiohttp missing from this install: the node trains on without it
            self.ctx.emit(ErrorOccurred(message=f"the completions endpoint is not available here: {exc}", fatal=False))
            return
        endpoint = OpenAIEndpoint(self._generation, lambda: f"neurollm-v{self.arch.version}", limits.openai_port)
        try:
            await endpoint.start()
        except OSError as exc:  # the port is taken: the node trains on, and says why there is no endpoint
            self.ctx.emit(ErrorOccurred(message=f"the completions endpoint could not listen on 127.0.0.1:"
                                                f"{limits.openai_port}: {exc.strerror or exc}", fatal=False))
            return
        self._openai = endpoint

    async def _try_model(self, command: Command) -> Any:
        """The "Try the model" page's commands (runtime/generation_service.py)."""
        service = self._generation()
        if isinstance(command, Generate):
            return await service.generate(command)
        if isinstance(command, QuoteGeneration):
            return await service.quote(command)
        return await service.model_state()
