"""Shared set-up for P2P tests: real nodes on 127.0.0.1 sockets, one asyncio loop per test."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc
import torch

from app.crypto.keys import PrivateKey
from app.node.p2p.aio import cancel_and_wait
from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import RpcRefusal
from app.node.p2p.node import P2PNode
from app.node.p2p.tracker import Tracker

T = TypeVar("T")

FAST = P2PConfig(
    heartbeat_interval_s=0.5, heartbeat_timeout_s=3.0, dht_rpc_timeout_s=2.0, rpc_timeout_s=3.0,
    republish_interval_s=30.0, refresh_interval_s=30.0, use_upnp=False,
)
"""Short heartbeats and timeouts so liveness tests finish in seconds; k and alpha stay 20 and 3."""


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "") -> None:
    """Wait until ``condition()`` holds: an event wait, not a time budget (``timeout`` only bounds a
    hang; a loaded machine takes longer and still passes)."""
    async def poll() -> None:
        while not await condition():
            await asyncio.sleep(0.05)

    try:
        async with asyncio.timeout(timeout):
            await poll()
    except asyncio.TimeoutError:
        raise AssertionError(f"never happened within {timeout:.0f} s: {what}") from None


HANG_S = 280.0
"""The least a scenario of ``run`` gets before it is cancelled: a hang bound, just under the suite's
per-test limit (pytest-timeout, 300 s), so a hung scenario is still cancelled and its nodes stopped
cleanly. The 60-180 s that call sites name come from quiet machines; 50 real nodes joining over
TLS take several times longer on a loaded 2-core one."""


def run(coro: Coroutine[Any, Any, T], timeout: float = HANG_S) -> T:
    """Run a scenario on a fresh loop; ``timeout`` only bounds a hang (at least ``HANG_S``)."""
    async def bounded() -> T:
        scenario = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({scenario}, timeout=max(timeout, HANG_S))
        if not done:  # a hang: say where every task waits before cancelling them
            _print_tasks()
            await cancel_and_wait([scenario])
            raise TimeoutError(f"the scenario did not finish within {max(timeout, HANG_S):.0f} s "
                               "(the stacks of its tasks are on stderr)")
        return scenario.result()

    return asyncio.run(bounded())


def _print_tasks() -> None:
    """Where every task and thread waits (a task in compiled code has no line: its repr is all)."""
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            print(f"--- {task!r}", file=sys.stderr)
            with contextlib.suppress(Exception):
                task.print_stack(file=sys.stderr)
    with contextlib.suppress(Exception):  # needs a real file: under capture, pytest's is not one
        faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)


@contextlib.asynccontextmanager
async def swarm(n: int, config: P2PConfig = FAST, tracker: bool = True) -> AsyncIterator[tuple[Tracker | None, list[P2PNode]]]:
    """A tracker and ``n`` nodes joined through it; everything stopped on exit."""
    tr = Tracker(0, config=config) if tracker else None
    nodes: list[P2PNode] = []
    try:
        if tr is not None:
            await tr.start()
        trackers = [tr.address] if tr is not None else []
        for _ in range(n):
            node = P2PNode(PrivateKey.generate(), trackers=trackers, config=config)
            await node.start()
            nodes.append(node)
        yield tr, nodes
    finally:
        await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)
        if tr is not None:
            await tr.stop()


async def double(caller: bytes, kind: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """A stage handler: doubles ``x`` and echoes the micro-batch id (forward and backward only)."""
    if kind not in ("forward", "backward"):
        raise RpcRefusal(grpc.StatusCode.UNIMPLEMENTED, f"this test stage does not serve {kind}")
    return {"microbatch": meta.get("microbatch"), "kind": kind}, {"y": tensors["x"] * 2}
