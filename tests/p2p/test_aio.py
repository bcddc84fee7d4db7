"""Cancellations reach their task: cancel_and_wait waits for every one, a retrying loop still stops."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from app.node.p2p.aio import cancel_and_wait


def test_every_task_is_cancelled_and_finished_whatever_it_ended_with() -> None:
    async def scenario() -> list[asyncio.Task]:
        async def forever() -> None:
            await asyncio.Event().wait()

        async def fails() -> None:
            raise ValueError("a task that failed before it was cancelled")

        tasks = [asyncio.ensure_future(forever()), asyncio.ensure_future(fails())]
        await asyncio.sleep(0)  # the failing one runs and fails
        await cancel_and_wait(tasks)
        return tasks

    forever, failed = asyncio.run(scenario())
    assert forever.cancelled() and failed.done() and isinstance(failed.exception(), ValueError)


def test_a_caller_cancelled_while_it_waits_is_cancelled_not_resumed() -> None:
    async def scenario() -> str:
        wound_down = asyncio.Event()

        async def slow_to_stop() -> None:  # winds down only when the test lets it
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await wound_down.wait()
                raise

        async def caller() -> str:
            task = asyncio.ensure_future(slow_to_stop())
            await asyncio.sleep(0)
            await cancel_and_wait([task])
            return "carried on after being cancelled"

        running = asyncio.ensure_future(caller())
        for _ in range(3):
            await asyncio.sleep(0)  # the caller is now waiting in cancel_and_wait
        running.cancel()
        wound_down.set()
        with pytest.raises(asyncio.CancelledError):
            await running
        return "cancelled"

    assert asyncio.run(scenario()) == "cancelled"


_CYCLE_SCRIPT = """
import asyncio, gc, threading
import grpc
from app.node.p2p.aio import release_grpc_after_loop

def poller_alive():
    return any(t.name.endswith("(_poll_wrapper)") for t in threading.enumerate())

class Cycle:
    def __init__(self):
        self.me = self
        self.channel = grpc.aio.insecure_channel("127.0.0.1:9")

async def leave_a_cycle():
    Cycle()

gc.disable()  # the collector must not run by chance in between
asyncio.run(leave_a_cycle())
print(poller_alive())
release_grpc_after_loop()
print(poller_alive())
"""


def test_grpc_objects_a_finished_loop_left_in_a_cycle_are_freed_between_loops() -> None:
    """A channel that only the garbage collector can free outlives its loop, and with it gRPC's
    binding to that loop (its poller thread runs on); released after the loop, it goes at once.
    In a fresh interpreter: this one's other tests may hold gRPC objects of their own."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _CYCLE_SCRIPT], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False"]  # alive after the loop; gone once released


def test_a_loop_that_retries_failed_calls_still_stops_when_cancelled() -> None:
    """A maintenance loop (the heartbeat) catches a failed call and tries again next beat; a
    cancellation that arrives while a call is being made must still end it. Python 3.11's
    ``asyncio.wait_for`` drops a cancellation that arrives as the awaited thing completes, and the
    client awaited its channel that way: the loop then slept on for ever and ``P2PNode.stop``
    never returned (50-node swarms hung on a loaded machine). Cancelled at every point of a call."""
    from app.node.p2p.errors import P2PError

    from .helpers import run, swarm

    async def scenario() -> list[int]:
        async with swarm(2, tracker=False) as (_, (a, b)):
            async def beats() -> None:
                while True:
                    with contextlib.suppress(P2PError):  # logged and retried next beat, as the heartbeat does
                        await a.ping(b.address)

            kept_running = []
            for ticks in range(40):
                task = asyncio.ensure_future(beats())
                for _ in range(ticks):
                    await asyncio.sleep(0)
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=30)  # a hang bound: done at once when right
                if not done:
                    kept_running.append(ticks)
                    while not task.done():  # cancel until it ends, so the swarm can stop
                        task.cancel()
                        await asyncio.wait({task}, timeout=1)
                    break  # one is enough to fail; the next would wait out the bound again
            return kept_running

    assert run(scenario()) == []


def test_the_app_never_bounds_an_await_with_wait_for() -> None:
    """The same flaw anywhere else ends the same way, so the app bounds awaits with
    ``asyncio.timeout`` (which keeps a cancellation that races a completion) and never
    ``asyncio.wait_for``; this keeps a new call site from bringing it back."""
    from pathlib import Path

    app = Path(__file__).resolve().parents[2] / "app"
    uses = [f"{path.relative_to(app.parent)}:{number}"
            for path in sorted(app.rglob("*.py"))
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if "asyncio.wait_for(" in line]
    assert uses == []
