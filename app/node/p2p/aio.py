"""Small asyncio helpers shared by the p2p modules."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Future[object]]) -> None:
    """Cancel every task, then wait for each to finish, ignoring how it ended.

    Cancelling all first lets them wind down together; awaiting afterwards makes sure none still
    runs (or logs "Task was destroyed but it is pending") once the caller moves on. The caller's
    own cancellation is not swallowed: ``asyncio.wait`` raises it here while the tasks' outcomes
    are only read. (Awaiting each task under a blanket suppress also ate a cancellation of the
    caller that arrived meanwhile, so a cancelled scenario could carry on and never end.)
    """
    every = list(tasks)
    pending = [task for task in every if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    for task in every:
        if not task.cancelled():
            task.exception()  # read, so asyncio does not log "exception was never retrieved"


def release_grpc_after_loop() -> None:
    """Finalise the gRPC objects of an event loop that has ended (call it after closing one).

    gRPC's asyncio stack binds to the loop in which its first channel or server was made, and
    stays bound while any of them is alive: calls made in a later loop have their completions
    relayed through the first one. When a loop ended with a channel or server still alive (a
    reference cycle that only the garbage collector frees), the next loop's calls wait on a
    loop nobody runs, for ever, and when the collector finally frees the old object mid-way
    through the next loop, gRPC's shutdown waits on its poller thread. Collecting while gRPC's
    poller thread (``_poll_wrapper``) still runs frees those objects now, between loops, so the
    next loop binds gRPC afresh. Cheap when nothing is left: the thread is gone then."""
    poller = _grpc_poller()
    if poller is None or poller.ident in _held_pollers:
        return
    gc.collect()
    if (still := _grpc_poller()) is not None:
        _held_pollers.add(still.ident)  # objects someone still holds: collecting again frees nothing


_held_pollers: set[int | None] = set()


def _grpc_poller() -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name.endswith("(_poll_wrapper)")), None)
