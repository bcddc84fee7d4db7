"""What a node does when neither checkpoint copy verifies (#15 item 2): never a silent restart.

In order: restore the stage from a live replica's weights when one answers; otherwise the policy
decides. ``ask`` (the app) publishes ``CheckpointDecisionNeeded`` and waits for the volunteer's
``ResolveCorruptCheckpoint``; ``restart`` starts the stage afresh; ``stop`` (the headless default)
ends the node with ``EXIT_CORRUPT_CHECKPOINT`` and a message naming the files. Whatever is chosen
the unusable files are only renamed (``<name>.corrupt-<time>``) once the node goes on, so a stop
leaves them exactly where they were for the next start to ask again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from app.node.events import CheckpointRecovered, Event
from app.node.faults import EXIT_CORRUPT_CHECKPOINT, CheckpointDecision, FaultStop
from app.node.model.checkpoint import CheckpointsUnusable, set_aside_all


async def recover_unusable_checkpoints(lost: CheckpointsUnusable, checkpoint: Path, *, policy: str,
                                       emit: Callable[[Event], None], decision: CheckpointDecision,
                                       from_replica: Callable[[], Awaitable[str | None]],
                                       stopped: Callable[[], Awaitable[object]]) -> str:
    """Go on after ``lost`` for the stage just built with genesis weights; returns "replica" or
    "restart", or raises ``FaultStop``. ``from_replica`` loads a live replica's weights into the
    stage and says from whom (None when no replica answered)."""
    source = await from_replica()
    if source is not None:
        kept = set_aside_all(checkpoint, str(lost))
        emit(CheckpointRecovered(how="replica", detail=f"stage restored from the live replica {source}",
                                 set_aside=tuple(str(a.now_at) for a in kept)))
        return "replica"
    choice = policy if policy != "ask" else await decision.ask(emit, str(lost), stopped)
    if choice == "stop":
        raise FaultStop(f"both checkpoints are unusable and no live replica holds this stage: {lost}. "
                        "Nothing was changed; restore a backup, or start again with "
                        "--on-corrupt-checkpoint restart to train this stage from scratch",
                        EXIT_CORRUPT_CHECKPOINT)
    kept = set_aside_all(checkpoint, str(lost))
    emit(CheckpointRecovered(how="restart", detail="no live replica; the stage starts from scratch as chosen",
                             set_aside=tuple(str(a.now_at) for a in kept)))
    return "restart"
