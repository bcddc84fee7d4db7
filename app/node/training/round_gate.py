"""RoundGate: closed while a DiLoCo outer step (or a late member's adoption) rewrites a stage.

A closed gate lets no new stage call in (StageWorker.handle waits for it), so no step ever
computes on half-updated weights; calls already computing finish first under the stage's lock.
"""

from __future__ import annotations

import asyncio


class RoundGate:
    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait_open(self) -> None:
        await self._open.wait()

    def close(self) -> None:
        self._open.clear()

    def reopen(self) -> None:
        self._open.set()
