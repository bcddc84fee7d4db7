"""Growing a running stage's vocabulary, and tagging stage calls with the caller's vocabulary.

``VocabGuard`` is what a stage with the embedding or the head checks before computing (stage.py
asks it): the tag of the vocabulary it computes for, the refusal it answers to a request tagged
for another one, and whom it tells about that other tag (runtime/vocab_service.py catches up).

``grow_stage_vocab`` switches one StageWorker (and its StageSync) to a vocabulary with more
tokens, between steps:

* the embedding and head gain one row per new token, in place (app/node/model/growth.py
  ``grow_vocab_in_place``): a new token starts as the mean of its merge's two parts in both
  matrices, so it means roughly what its parts meant, and no existing token's logit changes;
* the inner AdamW moments of those parameters gain zero rows (a new row starts with no
  history, as a fresh parameter would; the shared step counter keeps its bias correction);
* the DiLoCo anchor grows by the same rule applied to the *anchor's* rows (a new anchor row is
  the mean of its parts' anchor rows) and the outer momentum and compression residuals gain
  zero rows. Replicas share one anchor after every round, so they keep sharing it even when
  they grow at different moments inside a round (a catch-up); a new row's pseudo-gradient is
  the mean of its parts' pseudo-gradients, zero when the growth falls on a round boundary;
* forward graphs and gradients accumulated for unfinished steps are dropped (their shapes are
  void); commit reports those micro-batches missing and the driver replays them.

Every replica of a layer range that grows at the same round boundary from the same state ends
with identical shapes and values, so the next outer step averages as before.

``VocabTaggedTransport`` wraps the StageTransport a driver uses: every call carries the driver's
vocabulary tag, and a ``vocab_mismatch`` answer (stage.py) becomes :class:`VocabMismatch`, a
``WaitAndRetry`` without a peer, which the pipeline already retries with back-off and
without forgetting the route; before raising, the wrapper hands the other side's tag to
``on_mismatch`` so this node can catch up if its own ledger agrees (runtime/vocab_service.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import torch

from app.node.model.growth import extend_rows, grow_vocab_in_place
from app.node.training.transport import Meta, StageReply, StageTransport, Tensors, WaitAndRetry

if TYPE_CHECKING:  # stage.py and sync.py import this module (the guard)
    from app.node.training.stage import StageWorker
    from app.node.training.sync import StageSync

VOCAB_KEY = "vocab"
VOCAB_MISMATCH = "vocab_mismatch"


class VocabGuard:
    """A stage's vocabulary tag and what it does about requests for another vocabulary."""

    def __init__(self, tag: str = "", on_mismatch: Callable[[str], Awaitable[None]] | None = None) -> None:
        self._tag = tag  # "" = not checked
        self._on_mismatch = on_mismatch

    @property
    def tag(self) -> str:
        return self._tag

    def retag(self, version: str) -> None:
        """The stage computes for ``version`` from now on (it grew, or its vocabulary was renamed)."""
        self._tag = version

    def refusal(self, meta: Meta, layer_range: tuple[int, int]) -> Meta | None:
        """The answer to a request tagged for another vocabulary, None when the stage may compute."""
        theirs = meta.get(VOCAB_KEY)
        if theirs is None or not self._tag or theirs == self._tag:
            return None
        return {"status": VOCAB_MISMATCH, VOCAB_KEY: self._tag,
                "error": f"stage {layer_range} computes for vocabulary {self._tag}, the request "
                         f"is for {str(theirs)[:40]}; retry once the vocabularies agree"}

    async def heard(self, theirs: str) -> None:
        """A refused request carried ``theirs``: let this node catch up if its ledger agrees."""
        if self._on_mismatch is not None:
            await self._on_mismatch(theirs)


class VocabMismatch(WaitAndRetry):
    """The stage computes for another vocabulary; retry after one side caught up."""

    def __init__(self, message: str, theirs: str) -> None:
        super().__init__(message, None)
        self.theirs = theirs


def grow_stage_vocab(stage: StageWorker, sync: StageSync | None, sources: Sequence[tuple[int, int]],
                     version: str) -> None:
    """Add ``len(sources)`` tokens (``sources[k]`` = the ids merge ``k`` joins) and tag the stage
    with ``version``. Call between steps, on the thread that owns the stage's event loop, with no
    DiLoCo round in progress (the gate open); it takes the stage's lock."""
    with stage.lock:
        if sources and (stage.is_first or stage.is_last):
            old_rows = {id(p): p.shape[0] for p in stage.params}
            grown = grow_vocab_in_place(stage.shard, [list(s) for s in sources])
            _pad_optimizer(stage, grown, old_rows)
            if sync is not None:
                _pad_diloco(stage, sync, grown, sources)
            stage.discard_pending()
        stage.vocab_guard.retag(version)


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros((rows - t.shape[0], *t.shape[1:]))])


def _pad_optimizer(stage: StageWorker, grown: list[torch.nn.Parameter], old_rows: dict[int, int]) -> None:
    for p in grown:
        state = stage.optimizer.state.get(p)
        if state is None:
            continue
        for key in ("exp_avg", "exp_avg_sq"):
            if state[key].shape[0] == old_rows[id(p)]:
                state[key] = _pad_rows(state[key], p.shape[0])


def _pad_diloco(stage: StageWorker, sync: StageSync, grown: list[torch.nn.Parameter],
                sources: Sequence[tuple[int, int]]) -> None:
    names = {name: p for name, p in stage.shard.named_parameters() if any(p is g for g in grown)}
    old = sync.replica.state_dict()
    residual = sync.feedback.residual if sync.feedback is not None else {}
    grown_residual = {}
    for name, p in names.items():
        old["anchor"][name] = extend_rows(old["anchor"][name], [list(s) for s in sources])
        old["momentum"][name] = _pad_rows(old["momentum"][name], p.shape[0])
        if name in residual:
            grown_residual[name] = _pad_rows(residual[name], p.shape[0])
    sync.adopt_grown_state(old, grown_residual)


class VocabTaggedTransport:
    """A StageTransport whose calls carry this node's vocabulary tag (module docstring)."""

    def __init__(self, inner: StageTransport, version: Callable[[], str],
                 on_mismatch: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.inner = inner
        self.version = version
        self.on_mismatch = on_mismatch

    def holders(self, layer_start: int) -> list[str]:
        return self.inner.holders(layer_start)

    def retry_delay(self, attempt: int) -> float | None:
        return self.inner.retry_delay(attempt)

    async def call(self, layer_start: int, op: str, meta: Meta, tensors: Tensors, *,
                   prefer: str | None = None, exclude: frozenset[str] = frozenset()) -> StageReply:
        mine = self.version()
        reply = await self.inner.call(layer_start, op, {**meta, VOCAB_KEY: mine}, tensors,
                                      prefer=prefer, exclude=exclude)
        if reply.meta.get("status") != VOCAB_MISMATCH:
            return reply
        theirs = str(reply.meta.get(VOCAB_KEY, ""))
        if self.on_mismatch is not None:
            await self.on_mismatch(theirs)
        raise VocabMismatch(f"the stage at layer {layer_start} ({reply.peer[:12]}) computes for vocabulary "
                            f"{theirs[:40]}, this driver for {mine}; retrying once they agree", theirs)
