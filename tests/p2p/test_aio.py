"""cancel_and_wait: every task is cancelled and waited for, and the caller's own cancellation is kept."""

from __future__ import annotations

import asyncio

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
