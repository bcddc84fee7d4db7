"""VocabService: merges that passed a governance vote reach the running node's model and data.

DESIGN.md §3: the vocabulary starts at 266 tokens and grows by merges that pass a vote. The
ledger (economics/governance.py) says which proposals are implemented; this service decides
*when* this node's tokenizer, its data loader's token stream and its stage's embedding/head
switch to them, and keeps the switch consistent across the pipeline and across replicas.

**When: at a DiLoCo round boundary, computed alone from the node's own ledger.** Right after a
stage's outer step (``round_closed``, the StageSync's ``on_report``) the service reads the ledger and activates every
implemented proposal it has not activated yet, in implementation order (governance.ready_proposals); proposals are taken
only while every proposal created before them is final (implemented, rejected or without
quorum), so two nodes never apply the same proposals in different orders because one of them
had not heard of an earlier vote yet. Why a round boundary:

* replicas of a layer range close each round together (the outer step is a synchronous
  exchange), and just after it their weights, anchor and momentum are identical, so replicas
  that grow there from the same ledger grow identically and the next round averages tensors of
  the same shapes (vocab_growth.py grows the AdamW and DiLoCo state with zero rows);
* a driver (embedding) and the head replica of its quorum commit the same steps, so their round
  boundaries fall on the same driver step: the driver commits the head first and its own stage
  last, both rounds close inside that step's commit, and the next batch is drawn after it — from
  a loader that already yields the new ids (``set_tokenizer`` runs in the same callback);
* the moment needs no clock: ledgers that hold the same records agree on what is implemented
  (phases follow record timestamps, not wall time), and gossip makes them agree within seconds
  while a round lasts minutes or hours.

**Guard and catch-up.** Where the rule above still disagrees (a ledger behind by a record, a
head that serves several drivers, a node that joined mid-round) nothing computes on mixed
vocabularies: every stage call from a driver carries its vocabulary tag, and a stage with the
embedding or the head refuses a call with another tag (``vocab_mismatch``, stage.py), which the
driver retries with back-off (``VocabMismatch``, vocab_growth.py). Both ends then *catch up*
instead of waiting for a boundary that may never come (a head whose only driver is refused
commits nothing, so its round never closes): the side whose tag is older hears the newer tag —
the driver from the refusal, the stage from the request — and switches at once to it if, and
only if, its own ledger has that vocabulary in its activation chain. A tag no ledger here
vouches for is never adopted, so a peer cannot push merges nobody voted for. A catch-up
happens between steps but may fall mid-round; replicas still share their anchor (new anchor
rows are built from the shared anchor, vocab_growth.py), so once all of them have grown the
round averages as usual. Only a replica that has not grown by the time the round closes sends
a pseudo-gradient of the old shape, which the others refuse as undecodable (sync.py) for that
one round, and it refuses theirs; it grows at that boundary and then adopts the post-round
DiLoCo state of a replica it refused (``StageSync.catch_up_with``, the late-member path), so the
cohort shares one anchor again.

**Reading the ledger.** Ledger reads may replay records and write its snapshot, so they stay
off the event loop (as the economy's queries do): ``start`` refreshes a copy of the proposals
every few seconds on an executor thread and the round hook reads that copy, which keeps the
hook fast and synchronous (it must finish before the driver draws its next batch). Without
``start`` (tests, tools) the ledger is read directly.

**Bad proposals.** Two approved proposals may name the same merge; applying the later one then
fails (``TokenizerError``). Every node skips such a proposal as a whole, at the same place in
the order, and remembers that it did, so vocabularies still agree.

**Restarts.** The activated proposals (and the skipped ones) are kept in ``vocabulary.json``
in the data dir, written atomically at each activation. A checkpoint written before the last
activation has the previous vocabulary size; ``rewind_to`` returns to that prefix of the
history, and the next round boundary activates the rest again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.node.config import atomic_write_bytes
from app.node.data.loader import BatchLoader
from app.node.economics.governance import Proposal, ready_proposals
from app.node.model.architecture import ModelArchitecture
from app.node.tokenizer import NeuroTokenizer, TokenizerError
from app.node.training.stage import StageWorker
from app.node.training.sync import StageSync, SyncReport
from app.node.training.transport import StageTransport
from app.node.training.vocab_growth import VocabGuard, VocabTaggedTransport, grow_stage_vocab

log = logging.getLogger("neuroshard.runtime.vocab")

VOCAB_FILE = "vocabulary.json"
FORMAT = "neuroshard-vocab/1"
ADOPT_ATTEMPTS = 5
ADOPT_RETRY_S = 1.0
"""A late replica asks again after this long when the peer had not applied its outer step yet
(the fetched state is from an earlier round); the round itself takes much longer."""
REFRESH_S = 5.0
"""How stale the copy of the ledger's proposals may be; a DiLoCo round lasts far longer."""


class VocabStateError(ValueError):
    """``vocabulary.json`` is unreadable or does not rebuild a valid tokenizer."""


@dataclass(frozen=True)
class Step:
    """One proposal in this node's activation history."""

    proposal_id: str
    merges: tuple[tuple[bytes, bytes], ...]
    applied: bool  # False: skipped, its merges clash with the vocabulary before it


def chain(tokenizer: NeuroTokenizer, proposals: Iterable[Proposal]) -> list[tuple[Step, NeuroTokenizer]]:
    """Each proposal applied in turn: (step, tokenizer after it); clashing ones are skipped."""
    out = []
    for p in proposals:
        try:
            nxt = tokenizer.apply_merges(p.merges)
            step = Step(p.proposal_id, tuple(p.merges), True)
        except TokenizerError:
            nxt, step = tokenizer, Step(p.proposal_id, tuple(p.merges), False)
        out.append((step, nxt))
        tokenizer = nxt
    return out


class VocabService:
    """Owns this node's vocabulary: tokenizer, activation history, and the switch (module doc)."""

    def __init__(self, data_dir: Path, proposals: Callable[[], Iterable[Proposal]],
                 on_change: Callable[[NeuroTokenizer], None] | None = None) -> None:
        """``on_change(tokenizer)`` after every switch (later stages are built at the new size)."""
        self.path = Path(data_dir) / VOCAB_FILE
        self.proposals = proposals
        self.history: list[Step] = self._load()
        self._tokenizer = _tokenizer_of(self.history)
        self.stage: StageWorker | None = None
        self.sync: StageSync | None = None
        self.loader: BatchLoader | None = None
        self._on_change = on_change
        self._tasks: set[asyncio.Future[None]] = set()
        self._known: list[Proposal] | None = None  # the refreshed copy, once start() ran
        self._refresher: asyncio.Future[None] | None = None

    # --- what the rest of the node reads --------------------------------------------------------
    @property
    def tokenizer(self) -> NeuroTokenizer:
        return self._tokenizer

    @property
    def version(self) -> str:
        return self._tokenizer.version

    def architecture(self, base: ModelArchitecture) -> ModelArchitecture:
        """``base`` (the genesis-vocabulary architecture from config) at the current vocabulary."""
        return base.with_changes(vocab=self._tokenizer.vocab_size)

    def transport(self, inner: StageTransport) -> VocabTaggedTransport:
        """The driver's stage transport, tagging calls and catching up on refusals."""
        return VocabTaggedTransport(inner, lambda: self.version, self.catch_up)

    def guard(self) -> VocabGuard:
        """What a stage built now checks requests against: the current vocabulary, and a refusal
        makes this node catch up when its ledger agrees (give it to the StageWorker)."""
        return VocabGuard(self.version, self.catch_up)

    # --- wiring -----------------------------------------------------------------------------------
    def attach(self, stage: StageWorker, sync: StageSync | None) -> None:
        """Serve ``stage`` (again, after a move): tag it, switch it at its round boundaries (build
        ``sync`` with ``on_report=round_closed``) and refusals (build the stage with ``guard()``)."""
        if (stage.is_first or stage.is_last) and stage.shard.architecture.vocab != self._tokenizer.vocab_size:
            raise VocabStateError(f"stage {stage.layer_range} has {stage.shard.architecture.vocab} tokens but the "
                                  f"vocabulary has {self._tokenizer.vocab_size}; build it from architecture()")
        stage.vocab_guard.retag(self.version)
        self.stage, self.sync = stage, sync

    def round_closed(self, sync: StageSync, report: SyncReport) -> None:
        """A DiLoCo round of ``sync`` closed (StageSync's ``on_report``): a round boundary."""
        if sync is not self.sync or self.stage is None:  # a stage we left may still finish a round
            return
        before = self._tokenizer.vocab_size
        self.on_round()
        if self._tokenizer.vocab_size > before:
            self._rejoin(self.stage, sync, report)

    def _rejoin(self, stage: StageWorker, sync: StageSync, report: SyncReport) -> None:
        """We grew right after a round in which replicas' shapes differed: we were the late one,
        so take a grown replica's anchor and momentum (behind the closed gate, as sync.py does)."""
        refused = [peer for peer, why in report.rejected if why.startswith("undecodable")]
        if not refused or not sync.can_catch_up:
            return
        closed = sync.rounds

        async def adopt() -> None:
            for attempt in range(ADOPT_ATTEMPTS):
                if attempt:  # the peer had not closed the round yet when we asked
                    await asyncio.sleep(ADOPT_RETRY_S)
                await stage.gate.wait_open()
                stage.gate.close()
                try:
                    for peer in refused:
                        if await sync.catch_up_with(peer) and sync.rounds >= closed:
                            log.info("took %s's DiLoCo state after growing the vocabulary late", peer[:12])
                            return
                finally:
                    stage.gate.reopen()
            log.warning("no grown replica's DiLoCo state after %d tries; staying on our own", ADOPT_ATTEMPTS)

        self._tasks.add(task := asyncio.ensure_future(adopt()))
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for background work (a late replica's adoption) to finish, e.g. before stopping."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def attach_loader(self, loader: BatchLoader) -> None:
        """The driver's loader: yields ids of the current vocabulary from its next batch on."""
        loader.set_tokenizer(self._tokenizer)
        self.loader = loader

    def rewind_to(self, vocab_size: int) -> bool:
        """Return to the history prefix whose vocabulary has ``vocab_size`` tokens (a checkpoint
        from before the last activation); False, unchanged, when no prefix has that size."""
        for n in range(len(self.history), -1, -1):
            if _tokenizer_of(self.history[:n]).vocab_size == vocab_size:
                # keep the skipped proposals right after the prefix: they stay skipped
                while n < len(self.history) and not self.history[n].applied:
                    n += 1
                if n != len(self.history):
                    self._set_history(self.history[:n])
                return True
        return False

    # --- the ledger's proposals ----------------------------------------------------------------
    def start(self, interval_s: float = REFRESH_S) -> None:
        """Keep a copy of the ledger's proposals, refreshed off the loop (module docstring)."""
        if self._refresher is None:
            self._refresher = asyncio.ensure_future(self._refresh_forever(interval_s))

    async def stop(self) -> None:
        tasks = [t for t in (self._refresher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._refresher = None

    async def refresh(self) -> None:
        try:
            self._known = await asyncio.get_running_loop().run_in_executor(None, lambda: list(self.proposals()))
        except Exception:  # a broken ledger must not stop training; keep the last copy
            log.exception("could not read the governance proposals")

    async def _refresh_forever(self, interval_s: float) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s)

    def _proposals(self) -> list[Proposal]:
        return self._known if self._known is not None else list(self.proposals())

    # --- switching --------------------------------------------------------------------------------
    def pending(self) -> list[tuple[Step, NeuroTokenizer]]:
        """What this node's ledger says comes next, with the tokenizer after each step."""
        done = {s.proposal_id for s in self.history}
        return chain(self._tokenizer, ready_proposals(self._proposals(), done))

    def on_round(self) -> bool:
        """A round boundary of our stage: activate everything due. True if anything changed."""
        steps = self.pending()
        if not steps:
            return False
        self._activate(steps)
        return True

    async def catch_up(self, theirs: str) -> None:
        """A peer computes for vocabulary ``theirs``: switch to it now if our ledger leads there."""
        if not self._steps_to(theirs):
            return
        if self.stage is not None:
            await self.stage.gate.wait_open()  # never during an outer step
        steps = self._steps_to(theirs)  # again: a boundary may have switched us meanwhile
        if steps:
            self._activate(steps)

    def reach_size(self, vocab_size: int) -> bool:
        """Weights downloaded from a replica are for ``vocab_size`` tokens: switch to that size now
        if our ledger leads there (True, also when we already are there). A size our ledger does not
        lead to (the peer is behind, or our ledger has not heard of its proposals yet) is False:
        the caller must not load those weights. Call it before the stage serves anyone."""
        if vocab_size == self._tokenizer.vocab_size:
            return True
        steps = self._steps_until(lambda tok: tok.vocab_size == vocab_size)
        if steps:
            self._activate(steps)
        return bool(steps)

    def _steps_to(self, theirs: str) -> list[tuple[Step, NeuroTokenizer]]:
        return self._steps_until(lambda tok: tok.version == theirs)

    def _steps_until(self, reached: Callable[[NeuroTokenizer], bool]) -> list[tuple[Step, NeuroTokenizer]]:
        """The pending steps up to the first whose tokenizer is ``reached``; [] when none is."""
        steps = self.pending()
        for n, (_, tok) in enumerate(steps):
            if reached(tok):
                return steps[: n + 1]
        return []

    def _activate(self, steps: list[tuple[Step, NeuroTokenizer]]) -> None:
        new = steps[-1][1]
        old = self._tokenizer
        if new.vocab_size > old.vocab_size and self.stage is not None:
            grow_stage_vocab(self.stage, self.sync, new.merge_ids[len(old.merges):], new.version)
        elif self.stage is not None:
            self.stage.vocab_guard.retag(new.version)
        if self.loader is not None:
            self.loader.set_tokenizer(new)
        self._set_history(self.history + [s for s, _ in steps])
        for skipped in (s for s, _ in steps if not s.applied):
            log.warning("vocabulary proposal %s skipped: its merges clash with the vocabulary before it",
                        skipped.proposal_id[:12])
        log.info("vocabulary %s -> %s (%d proposal(s))", old.version, new.version, len(steps))
        if self._on_change is not None:
            try:
                self._on_change(new)
            except Exception:
                log.exception("vocabulary listener failed")

    # --- persistence --------------------------------------------------------------------------------
    def _set_history(self, history: list[Step]) -> None:
        tokenizer = _tokenizer_of(history)
        data = {"format": FORMAT, "content_hash": tokenizer.content_hash,
                "history": [{"proposal": s.proposal_id, "applied": s.applied,
                             "merges": [[a.hex(), b.hex()] for a, b in s.merges]} for s in history]}
        atomic_write_bytes(self.path, json.dumps(data, indent=1).encode())
        self.history, self._tokenizer = history, tokenizer

    def _load(self) -> list[Step]:
        if not self.path.exists():
            return []
        try:
            data: Any = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise VocabStateError(f"{self.path} is not a vocabulary file ({data.get('format')!r})")
            history = [Step(str(h["proposal"]), tuple((bytes.fromhex(a), bytes.fromhex(b)) for a, b in h["merges"]),
                            bool(h["applied"])) for h in data["history"]]
            tokenizer = _tokenizer_of(history)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise VocabStateError(f"cannot read {self.path}: {exc}") from exc
        if tokenizer.content_hash != data.get("content_hash"):
            raise VocabStateError(f"{self.path}: merges do not match the recorded content hash")
        return history


def _tokenizer_of(history: list[Step]) -> NeuroTokenizer:
    return NeuroTokenizer([m for s in history if s.applied for m in s.merges])

