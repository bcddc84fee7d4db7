"""EconomyLink: plugs the lead's EconomyService (economy.py) into the node runtime.

Work reports flow from the trainer's StepInfo hook into ``on_work``; ledger records gossip on the
P2P ``ledger`` topic; wallet commands and wallet/ledger queries are answered off the loop thread.
The economy is an add-on to training: if it cannot start (no usable keystore, a broken ledger
file), the node logs why and trains on without rewards rather than stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from app.node.events import ErrorOccurred, Event
from app.node.runtime.network import NetworkService
from app.node.runtime_api import RuntimeContext

log = logging.getLogger("neuroshard.runtime.economy")


class EconomyLink:
    def __init__(self, ctx: RuntimeContext, net: NetworkService, key: Any,
                 subscribe_work: Callable[[Callable[[Any], None]], None]) -> None:
        self.ctx, self.net = ctx, net
        self.service: Any = None
        self._task: asyncio.Task[None] | None = None
        try:
            from app.node.runtime.economy import GOSSIP_TIMEOUT_S, GOSSIP_TOPIC, EconomyService

            self.service = EconomyService(key, ctx.config, ctx.emit, ctx.hardware.tier.value)
        except Exception as exc:  # rewards are optional; training is not
            log.exception("economy not started")
            ctx.emit(ErrorOccurred(message=f"rewards are off for this run: {exc}", fatal=False))
            return
        subscribe_work(self.service.on_work)
        net.node.set_gossip_handler(GOSSIP_TOPIC, self.service.on_gossip)
        self._topic, self._timeout = GOSSIP_TOPIC, GOSSIP_TIMEOUT_S

    def start(self) -> None:
        if self.service is None:
            return

        async def send(peer: Any, payloads: list[bytes]) -> list[bytes]:
            return await self.net.node.gossip(peer, self._topic, payloads, self._timeout)

        self._task = asyncio.ensure_future(self.service.run(
            self.ctx.control.sleep, lambda: list(self.net.known.values()), None if self.net.solo else send))
        self._task.add_done_callback(_report_end)

    def handles(self, command: Event | Any) -> bool:
        return self.service is not None and self.service.handles(command)

    async def handle(self, command: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self.service.handle, command)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.service is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(None, self.service.close_epoch)
            self.service.close()


def _report_end(task: asyncio.Task[None]) -> None:
    """The epoch loop ended by itself: say why at once (a full disk under the ledger must stop
    the node, app/node/faults.py), rather than when the task is collected."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the economy loop stopped: rewards are off for this run", exc_info=task.exception())
