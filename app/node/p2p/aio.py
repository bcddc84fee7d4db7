"""Small asyncio helpers shared by the p2p modules."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Future[object]]) -> None:
    """Cancel every task, then wait for each to finish, ignoring how it ended.

    Cancelling all first lets them wind down together; awaiting afterwards makes sure none still
    runs (or logs "Task was destroyed but it is pending") once the caller moves on.
    """
    pending = list(tasks)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(BaseException):
            await task
