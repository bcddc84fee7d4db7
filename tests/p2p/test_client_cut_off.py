"""A call whose channel is closed under it fails as a P2PError; only a real cancellation cancels.

gRPC reports a call cancelled on this side (its channel closed: retired after UNAVAILABLE, replaced
on re-dial, evicted, or the client closed) by raising a bare ``asyncio.CancelledError`` in the
reading task. Let through, that ended a driver's step as if the step had been cancelled (seen in a
full run: ``_raise_for_status`` -> CancelledError out of ``PipelineDriver.train_step``).
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from app.node.p2p.errors import P2PError, PeerUnavailable
from tests.p2p.helpers import run, swarm


def _held_stage(entered: asyncio.Event, release: asyncio.Event):  # noqa: ANN202
    async def handler(caller, kind, meta, tensors):  # noqa: ANN001, ANN202
        entered.set()
        await release.wait()
        return {}, {"y": tensors["x"] * 2}
    return handler


def test_a_call_whose_channel_closes_under_it_fails_over_instead_of_cancelling_its_caller() -> None:
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (target, caller)):
            entered, release = asyncio.Event(), asyncio.Event()
            target.set_stage_handler(_held_stage(entered, release))
            call = asyncio.ensure_future(caller.call_stage(target.address, "forward", {}, {"x": torch.ones(2)}, 60))
            await asyncio.wait_for(entered.wait(), 60)  # the call is in flight on the pinned channel
            await caller.client.forget(target.address)  # the channel closes under it
            with pytest.raises(PeerUnavailable, match="channel closed"):
                await call
            assert not call.cancelled()
            release.set()
            _, out = await caller.call_stage(target.address, "forward", {}, {"x": torch.ones(2)}, 60)
            assert torch.equal(out["y"], torch.full((2,), 2.0))  # the next call dials afresh

    run(scenario())


def test_cancelling_the_caller_still_cancels_the_call() -> None:
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (target, caller)):
            entered, release = asyncio.Event(), asyncio.Event()
            target.set_stage_handler(_held_stage(entered, release))
            call = asyncio.ensure_future(caller.call_stage(target.address, "forward", {}, {"x": torch.ones(2)}, 60))
            await asyncio.wait_for(entered.wait(), 60)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert call.cancelled()
            release.set()

    run(scenario())


def test_a_closed_channel_reaches_a_reader_that_runs_in_its_own_task_as_a_p2p_error() -> None:
    """The stage calls read their answer in a task of their own (tensor_rpc._read_answer): there too."""
    async def scenario() -> None:
        async with swarm(2, tracker=False) as (_, (target, caller)):
            entered, release = asyncio.Event(), asyncio.Event()
            target.set_stage_handler(_held_stage(entered, release))
            results = asyncio.gather(
                caller.call_stage(target.address, "forward", {}, {"x": torch.ones(2)}, 60),
                caller.call_stage(target.address, "forward", {}, {"x": torch.ones(3)}, 60),
                return_exceptions=True)
            await asyncio.wait_for(entered.wait(), 60)
            await caller.client.close()
            outcome = await results
            assert all(isinstance(r, P2PError) for r in outcome), outcome
            release.set()

    run(scenario())
