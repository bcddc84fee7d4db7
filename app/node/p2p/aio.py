"""Small asyncio helpers shared by the p2p modules."""

from __future__ import annotations

import asyncio
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
