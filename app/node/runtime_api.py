"""The contract between the engine and the node runtime it drives.

The engine (``engine.py``) owns the thread, the asyncio loop, the lifecycle and the events; a
runtime (``app/node/runtime/``) owns what the node does: join or start a network, hold layers,
train, keep the ledger. Keeping the contract in its own small module lets either side be read,
and tested, without the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.node.config import NodeConfig
from app.node.events import Command, Event, NodeState
from app.node.faults import CheckpointDecision
from app.node.hardware import HardwareReport
from app.node.throttle import DutyCycle
from app.node.usage import UsageCapsHub


class RunControl:
    """Pause / stop requests and the CPU/GPU share the runtime honours between micro-batches
    (loop thread only). ``duty`` is the engine's duty cycle (app/node/throttle.py): ``proceed``
    also waits out the idle time the last compute is owed, so a driver stays under its share
    without holding an executor thread while it waits."""

    def __init__(self, duty: DutyCycle | None = None) -> None:
        self._running = asyncio.Event()
        self._running.set()
        self._stop = asyncio.Event()
        self._held = 0  # callers of proceed() waiting at the pause gate right now
        self.finish_step_then_stop = False
        self.duty = duty if duty is not None else DutyCycle()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def held(self) -> bool:
        """True while work waits at the pause gate: what was in flight past the gate when the
        pause came has ended or is parked there too, so nothing more is computed until ``resume``."""
        return self._held > 0

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def request_stop(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused runtime so it can exit
        self.duty.release()  # winding down (last step, checkpoint) must not wait for a share

    async def proceed(self) -> bool:
        """Wait while paused or while the share owes idle time; False once a stop was requested
        (the caller then winds down)."""
        if not self._running.is_set():
            self._held += 1
            try:
                await self._running.wait()
            finally:
                self._held -= 1
        await self.duty.idle(self._stop.is_set)
        return not self._stop.is_set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep that ends early on stop; returns False if a stop was requested."""
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except asyncio.TimeoutError:
            return True
        return False


@dataclass
class RuntimeContext:
    config: NodeConfig
    hardware: HardwareReport
    emit: Callable[[Event], None]  # thread-safe
    set_state: Callable[[NodeState, str], None]  # loop thread only
    control: RunControl
    executor: Executor  # heavy tensor work goes here, never on the loop thread
    loop: asyncio.AbstractEventLoop
    usage: UsageCapsHub = field(default_factory=UsageCapsHub)  # caps in force; subscribe to enforce one
    checkpoint_decision: CheckpointDecision = field(default_factory=CheckpointDecision)  # engine answers it


class Runtime(Protocol):
    @property
    def steps_done(self) -> int:
        """Steps this node applied in this run (0 until ``run`` returns them)."""

    async def run(self) -> int:
        """Join or start the network and work until ``max_steps`` or a stop; returns an exit code."""

    async def handle(self, command: Command) -> Any:
        """Commands the engine does not handle itself (modes, queries, wallet actions)."""

    async def shutdown(self) -> None:
        """Checkpoint, leave the network, close files. Must finish within a few seconds."""


RuntimeFactory = Callable[[RuntimeContext], Runtime]
