"""EconomyService: the node's ledger, its Proof-of-Neural-Work, gossip and the wallet commands.

Work flows in from the trainer (``on_work`` with each applied step, the one entry point for work);
each step is credited to the PoNW epoch it finished in, with the wall time since the previous
step (the span it was computed in) and its measured cost per layer and micro-batch. At the end of
every epoch the node signs one uptime proof and, when it trained, one training proof carrying the
weight hashes before and after, its work span and the fastest cost per layer it measured (the
bound the ledger checks, ``economics/ponw.py``), and submits them to its own ledger. Rewards follow from accepted
proofs inside the ledger after the challenge window (``app/node/economics``), never from here.
A data proof claims exactly the samples receivers signed ``receipt`` records for in this
node's ledger (``DATA_PROOF_DELAY_EPOCHS`` after the epoch). As a receiver, the node signs one
receipt per epoch for each server whose shards it fetched (``receipts``, data_receipts.py),
once it has an accepted training proof the ledger can count the receipt by. Async work is
paid the same way: a stage holder signs an ``async_receipt`` for each async node whose
pseudo-gradient its outer step merged (``async_receipts``), and the async node proves, like a
data node, exactly what the holders signed for (``_async_proofs``).

Ledger records spread by push-pull gossip (ledger_gossip.py); what an epoch's proofs claim is
gathered in epoch_work.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.crypto.keys import PrivateKey
from app.node.config import NodeConfig
from app.node.economics.constants import from_settings
from app.node.economics.handlers import RECEIPT_TRAINING_EPOCHS
from app.node.economics.ledger import Ledger
from app.node.economics.ponw import (
    MAX_SAMPLES_PER_SECOND,
    WorkFigures,
    make_async_receipt,
    make_proof,
    make_receipt,
)
from app.node.economics.report import OWN_PROOFS_FILE
from app.node.events import (
    BalanceChanged,
    EarningsChanged,
    Event,
    ProofAccepted,
    ProofRefused,
    ProposalChanged,
    Query,
    WalletCommand,
)
from app.node.runtime import wallet_api
from app.node.runtime.data_receipts import ReceiptBook
from app.node.runtime.epoch_work import EpochWork, InferenceWork, hash32
from app.node.runtime.ledger_gossip import GossipSend, LedgerGossip
from app.node.runtime.verification import StepLog, Verifier
from app.wallet.keystore import Keystore
from app.wallet.wallet import Wallet

log = logging.getLogger("neuroshard.economy")
MODE_OF_KIND = {"training": "pipeline", "uptime": "uptime", "data": "data", "verification": "verify",
                "inference": "inference", "async": "async"}
"""Contribution mode a reward of each proof kind pays; uptime is paid to any mode that keeps the
node online."""
MAX_ASYNC_RECEIPT_BATCHES = 10**6
"""Most batches one async receipt may carry (records.py); the rest waits for the next epoch."""
EPOCH_PASS_DELAY_S = 0.05
"""The epoch loop runs this long after an epoch begins (the epoch that ended is then surely over)."""
DATA_PROOF_DELAY_EPOCHS = 2
"""A data proof for epoch e is made in epoch e + 2: receipts signed in e (by the receivers) get
an epoch to reach this node by gossip, and the proof is still well inside e's challenge window."""


class EconomyService:
    def __init__(self, key: PrivateKey, config: NodeConfig, emit: Callable[[Event], None], tier: str,
                 keystore: Keystore | None = None, clock: Callable[[], float] = time.time,
                 lazy_steps: int = 0) -> None:
        """``lazy_steps`` > 0 is devnet fault injection: a lazy node that claims that many steps it
        never computed for every step it ran (verify mode must catch and slash it)."""
        self.key = key
        self._node_config = config
        self.config = from_settings(config.economics)
        lazy_steps = lazy_steps or self.config.fault_lazy_steps
        self.steps = StepLog(self.config, phantom_steps=lazy_steps)
        """What this node's training proofs commit to; the stage's forward hook feeds it."""
        self.verifier: Verifier | None = None
        self.ledger = Ledger(config.data_dir, self.config, clock=clock)
        self.session = wallet_api.WalletSession(Wallet(keystore or Keystore(config.data_dir), self.ledger, clock))
        self._emit = emit
        self._tier = int(tier.lstrip("T")) if tier[1:].isdigit() else 5
        self._clock = clock
        self._work: dict[int, EpochWork] = {}  # epoch -> work credited to it
        self._inference: dict[int, InferenceWork] = {}  # epoch -> inference served in it
        self._work_lock = threading.Lock()
        self._started_ms = int(clock() * 1000)
        self._work_mark_ms = self._started_ms  # when the last credited step ended
        self._last_epoch = self._epoch_of(self._started_ms) - 1
        self._first_receipted = self._last_epoch + 1  # receipted work before this run was proven by it
        self._proven: dict[str, set[int]] = {}  # kind -> epochs whose receipted work this run proved
        self._gossip = LedgerGossip(self.ledger)
        self._last_balance: tuple[int, int, int] | None = None
        self._proposal_phases: dict[str, str] = {}
        self.proofs_submitted = 0
        self._warned_budget = False
        self._refused: list[str] = []  # own proofs refused or slashed, oldest first
        self._seen_slashes: set[str] = set()
        self._last_earnings: tuple | None = None
        self._own_proofs: dict[str, dict[str, Any]] = {}  # kind -> made / refused_at_door (report.py)
        self._own_proofs_path = config.data_dir / OWN_PROOFS_FILE
        self.receipts: ReceiptBook[str] = ReceiptBook(key.address)
        """Samples this node received from data servers and owes receipts for (data_service.py)."""
        self.async_receipts: ReceiptBook[tuple[str, int, int]] = ReceiptBook(key.address, party=lambda k: k[0])
        """(async node, first layer, layers) -> batches this node's outer steps merged (stage_host.py)."""
        self._trained_epochs: set[int] = set()  # epochs of this node's accepted training proofs

    # --- work in --------------------------------------------------------------------------------

    def on_work(self, step: Any) -> None:
        """The economy's entry point for work: called after every applied step (any thread) with
        the trainer's StepInfo (step, batches, tokens, layers, role, hash_before, hash_after).

        The step is credited to the epoch it finished in; its span runs from the end of the
        previous credited step (never overlapping it, so the ledger's one-claim-per-moment rule
        holds) and reaches back at most ``max_work_span_epochs`` before that epoch."""
        now_ms = int(self._clock() * 1000)
        epoch = self._epoch_of(now_ms)
        with self._work_lock:
            earliest = (epoch - self.config.max_work_span_epochs) * self.config.epoch_ms
            start_ms = max(self._work_mark_ms, earliest)
            if now_ms <= start_ms:  # two steps in one millisecond: the second's span is empty
                now_ms = start_ms + 1
                if self._epoch_of(now_ms) != epoch:
                    return
            self._work_mark_ms = now_ms
            samples = self.steps.seal(str(getattr(step, "driver", "")), int(step.step))
            if samples is None:  # the step log could not commit it: work a verifier cannot check is not claimed
                if not self._warned_budget:
                    self._warned_budget = True
                    log.warning("a training step without a committed sample (memory budget, or taken over "
                                "mid-step) is not claimed: a verifier could not check it")
                return
            claimed = max(1, len(samples))  # a lazy node claims its phantom steps as work too
            self._work.setdefault(epoch, EpochWork()).add(step, start_ms, now_ms, samples, claimed)

    def on_inference(self, tokens: int, layers: int) -> None:
        """Inference work: one session step served (any thread), ``tokens`` generated tokens
        through the ``layers`` this node holds. Credited like a training step: to the epoch it
        finished in, its span starting where the last credited work ended (never overlapping it)."""
        if tokens <= 0:
            return
        now_ms = int(self._clock() * 1000)
        epoch = self._epoch_of(now_ms)
        with self._work_lock:
            start_ms = max(self._work_mark_ms, (epoch - self.config.max_work_span_epochs) * self.config.epoch_ms)
            if now_ms <= start_ms:
                now_ms = start_ms + 1
                if self._epoch_of(now_ms) != epoch:
                    return
            self._work_mark_ms = now_ms
            self._inference.setdefault(epoch, InferenceWork()).add(tokens, layers, start_ms, now_ms)

    def _take_inference(self, before_epoch: int) -> dict[int, InferenceWork]:
        with self._work_lock:
            done = {epoch: work for epoch, work in self._inference.items() if epoch < before_epoch}
            for epoch in done:
                del self._inference[epoch]
            return done

    def _take_work(self, before_epoch: int) -> dict[int, EpochWork]:
        """Removes and returns the work of every epoch that has ended before ``before_epoch``."""
        with self._work_lock:
            done = {epoch: work for epoch, work in self._work.items() if epoch < before_epoch}
            for epoch in done:
                del self._work[epoch]
            return done

    # --- epochs ---------------------------------------------------------------------------------

    def _epoch_of(self, now_ms: int) -> int:
        return now_ms // self.config.epoch_ms

    def close_epoch(self) -> list[str]:
        """Sign and submit the proofs for the epoch that just ended; returns the accepted kinds.

        Training work of every ended epoch is proven in its own epoch (a late call under load
        proves the epochs it missed too, as long as their challenge windows are open)."""
        now_ms = int(self._clock() * 1000)
        current = self._epoch_of(now_ms)
        epoch = current - 1
        if epoch <= self._last_epoch:
            return []
        self._last_epoch = epoch
        proofs: list[tuple] = [(epoch, "uptime", WorkFigures(uptime_ms=self.config.epoch_ms, tier=self._tier), b"", b"")]
        oldest_open = current - self.config.challenge_window_ms // self.config.epoch_ms
        for worked, work in sorted(self._take_work(current).items()):
            if worked < oldest_open or not work.batches or work.hash_before == work.hash_after:
                self.steps.release(work.samples)
                continue
            figures = WorkFigures(batches=work.batches, tokens=work.tokens, layers=max(1, work.layers),
                                  role=work.role, tier=self._tier, work_start_ms=work.start_ms,
                                  work_end_ms=work.end_ms, layer_us=work.layer_us,
                                  work_root=self.steps.root(work.samples))
            proofs.append((worked, "training", figures, hash32(work.hash_before), hash32(work.hash_after),
                           work.samples))
        for worked, served in sorted(self._take_inference(current).items()):
            if worked >= oldest_open:
                proofs.append((worked, "inference", WorkFigures(
                    tokens=served.tokens, batches=served.steps, layers=served.layers, role="worker", tier=self._tier,
                    work_start_ms=served.start_ms, work_end_ms=served.end_ms, layer_us=served.layer_us), b"", b""))
        proofs.extend(self._data_proofs(current, oldest_open))
        proofs.extend(self._async_proofs(current, oldest_open))
        checks = self.ledger.checks_done(self.key.address, epoch) if self.verifier is not None else 0
        if checks:
            proofs.append((epoch, "verification", WorkFigures(samples=checks, tier=self._tier), b"", b""))
        self.steps.expire(current)
        accepted = []
        for epoch, kind, figures, before, after, *samples in proofs:
            record = make_proof(self.key, self.config, epoch=epoch, kind=kind, work=figures,
                                timestamp_ms=now_ms, model_before=before, model_after=after)
            if samples:
                self.steps.publish(record.record_id, epoch, samples[0])
            result = self.ledger.submit(record.to_bytes(), now_ms)
            counts = self._own_proofs.setdefault(kind, {"made": 0, "refused_at_door": {}})
            counts["made"] += 1
            if not result.accepted:
                refusals = counts["refused_at_door"]
                refusals[result.reason] = refusals.get(result.reason, 0) + 1
            if result.accepted:
                accepted.append(kind)
                if kind == "training":
                    self._trained_epochs.add(epoch)
                self.proofs_submitted += 1
                # the reward the ledger granted when it applied the proof, not a second computation
                self._emit(ProofAccepted(proof_kind=kind, epoch=epoch,
                                         reward_units=self.ledger.proof_reward(record.record_id) or 0))
            else:
                log.warning("own %s proof for epoch %d refused: %s", kind, epoch, result.reason)
                self._refused.append(f"{kind}: {result.reason}")
                self._emit(ProofRefused(proof_kind=kind, epoch=epoch, reason=result.reason))
        self._write_own_proofs()
        self.sign_receipts(now_ms + 1)  # after this epoch's training proof in the ledger's order
        return accepted

    def sign_receipts(self, now_ms: int) -> int:
        """Sign this epoch's receipts for the samples data servers sent this node (one per server,
        at most what one epoch's receipt may count; the rest waits for the next epoch). Only once
        this node has an accepted training proof the ledger counts the receipt by; returns how
        many the ledger accepted."""
        epoch = self._epoch_of(now_ms)
        self._trained_epochs = {e for e in self._trained_epochs if e >= epoch - RECEIPT_TRAINING_EPOCHS}
        if not self._trained_epochs:
            return 0
        signed = 0
        for server, samples in self.receipts.due(MAX_SAMPLES_PER_SECOND * self.config.epoch_ms // 1000):
            record = make_receipt(self.key, self.config, server=server, epoch=epoch, samples=samples,
                                  timestamp_ms=now_ms)
            signed += self._submit_receipt(record, self.receipts, server, samples)
        for (contributor, first, layers), batches in self.async_receipts.due(MAX_ASYNC_RECEIPT_BATCHES):
            record = make_async_receipt(self.key, self.config, contributor=contributor, epoch=epoch,
                                        first_layer=first, layers=layers, batches=batches, timestamp_ms=now_ms)
            signed += self._submit_receipt(record, self.async_receipts, (contributor, first, layers), batches)
        return signed

    def _submit_receipt(self, record: Any, book: ReceiptBook[Any], key: Any, amount: int) -> int:
        result = self.ledger.submit(record.to_bytes(), record.timestamp_ms)
        if result.accepted:
            book.signed(key, amount)
            return 1
        # kept: the next epoch's receipt carries it
        log.info("%s for %d from %s not accepted: %s", record.kind, amount, str(key)[:24], result.reason)
        return 0

    def on_async_merged(self, first_layer: int, layers: int, merged: Sequence[tuple[str, int]]) -> None:
        """This node's outer step on ``layers`` layers from ``first_layer`` merged these async
        contributions ((contributor address, batches)): receipts owed to them (any thread)."""
        self.async_receipts.note(((contributor, first_layer, layers), batches) for contributor, batches in merged)

    def _receipted_epochs(self, kind: str, current: int, oldest_open: int) -> list[int]:
        """Epochs whose receipted work of ``kind`` may be proven now: ``DATA_PROOF_DELAY_EPOCHS``
        ago and older ones whose challenge window is still open, not proven yet by this run (a
        receipt that reached this ledger late by gossip is claimed on a later pass; one proof per
        kind and epoch, so what arrives after it is not)."""
        proven = self._proven.setdefault(kind, set())
        proven.difference_update({e for e in proven if e < oldest_open})
        first = max(self._first_receipted, oldest_open)  # as for training work: the ledger still takes it
        return [e for e in range(first, current - DATA_PROOF_DELAY_EPOCHS + 1) if e not in proven]

    def _data_proofs(self, current: int, oldest_open: int) -> list[tuple]:
        """Data proofs, each claiming exactly the samples its receivers signed for in this
        node's ledger (``_receipted_epochs``)."""
        proofs = []
        for epoch in self._receipted_epochs("data", current, oldest_open):
            served = self.ledger.receipted_samples(self.key.address, epoch)
            if served:
                self._proven["data"].add(epoch)
                proofs.append((epoch, "data", WorkFigures(samples=served, tier=self._tier), b"", b""))
        return proofs

    def _async_proofs(self, current: int, oldest_open: int) -> list[tuple]:
        """Async proofs (``_receipted_epochs``), each claiming what the stage holders that merged this node's pseudo-gradients signed for
        (their async receipts reach this ledger by gossip, like a data node's receipts)."""
        proofs = []
        for epoch in self._receipted_epochs("async", current, oldest_open):
            batches, layers = self.ledger.async_claim(self.key.address, epoch)
            if batches:
                self._proven["async"].add(epoch)
                proofs.append((epoch, "async", WorkFigures(batches=batches, layers=layers, role="none",
                                                           tier=self._tier, async_mode=True), b"", b""))
        return proofs

    def _write_own_proofs(self) -> None:
        tmp = self._own_proofs_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self._own_proofs, sort_keys=True))
            tmp.replace(self._own_proofs_path)
        except OSError as exc:  # a report file is not worth stopping for
            log.debug("could not write %s: %s", self._own_proofs_path, exc)

    def earnings(self) -> EarningsChanged:
        """Settled rewards from the ledger: lifetime, since this run started and per mode."""
        by_mode: dict[str, int] = {}
        lifetime = since_start = 0
        for entry in self.ledger.history(self.key.address, limit=10**9, kinds=("reward", "slash_reward", "slash")):
            if entry.kind == "slash" and entry.record_id not in self._seen_slashes:
                self._seen_slashes.add(entry.record_id)
                self._refused.append(f"slashed: {self.ledger.record_status(entry.record_id)[1]}")
                self._emit(ProofRefused(proof_kind="training", epoch=entry.timestamp_ms // self.config.epoch_ms,
                                        reason=self.ledger.record_status(entry.record_id)[1]))
            lifetime += entry.amount
            if entry.timestamp_ms >= self._started_ms:
                since_start += entry.amount
                mode = MODE_OF_KIND.get(entry.detail, "verify" if entry.kind == "slash_reward" else entry.detail)
                by_mode[mode] = by_mode.get(mode, 0) + entry.amount
        return EarningsChanged(lifetime_units=lifetime, since_start_units=since_start,
                               pending_units=self.ledger.balance(self.key.address).pending,
                               by_mode=tuple(sorted(by_mode.items())), refused=len(self._refused),
                               last_refusal=self._refused[-1] if self._refused else "")

    def publish_state(self) -> None:
        """Emit BalanceChanged / EarningsChanged / ProposalChanged when they changed since the last call."""
        balance = self.ledger.balance(self.key.address)
        current = (balance.available, balance.staked, balance.pending)
        if current != self._last_balance:
            self._last_balance = current
            self._emit(BalanceChanged(address=self.key.address, available_units=current[0],
                                      staked_units=current[1], pending_units=current[2]))
        earnings = self.earnings()
        summary = (earnings.lifetime_units, earnings.pending_units, earnings.by_mode, earnings.refused)
        if summary != self._last_earnings:
            self._last_earnings = summary
            self._emit(earnings)
        for row in wallet_api.proposal_rows(self.ledger, int(self._clock() * 1000)):
            if self._proposal_phases.get(row["id"]) != row["phase"]:
                self._proposal_phases[row["id"]] = row["phase"]
                self._emit(ProposalChanged(proposal_id=row["id"], phase=row["phase"], yes_weight=row["yes_weight"],
                                           no_weight=row["no_weight"], phase_ends_at=row["phase_ends_at"]))

    async def run(self, should_continue: Callable[[float], Awaitable[bool]],
                  peers: Callable[[], Sequence[Any]], send: GossipSend | None) -> None:
        """Epoch and gossip loop until ``should_continue(seconds)`` (a stoppable sleep) says stop."""
        loop = asyncio.get_running_loop()
        while await should_continue(self._until_next_pass()):
            await loop.run_in_executor(None, self.close_epoch)
            if self.verifier is not None:
                await self.verifier.round()
            if send is not None:
                candidates = list(peers())
                if candidates:
                    await self.gossip_round(random.choice(candidates), send)
            await loop.run_in_executor(None, self.publish_state)

    def _until_next_pass(self) -> float:
        """Seconds to the next pass of the loop: just after the next epoch begins, at most 5 s
        (gossip). A fixed sleep of one epoch drifts by the pass's own work and, with 1 s epochs (the
        devnet), now and then wakes two epochs later, so an epoch's proofs were never made."""
        epoch_s = self.config.epoch_ms / 1000
        now = self._clock()
        return min(5.0, epoch_s - now % epoch_s + EPOCH_PASS_DELAY_S)

    # --- verification -----------------------------------------------------------------------

    def start_verifying(self, arch: Any, fetch: Any, training: Any = None) -> Verifier:
        """Verify mode: re-check sampled and challenged proofs of others each round (needs stake;
        ``fetch(prover public key, proof id, step)`` asks the prover for a committed step;
        ``training``: the TrainingConfig steps are re-run with, by default this node's)."""
        def submit(record: Any) -> None:
            result = self.ledger.submit(record.to_bytes(), int(self._clock() * 1000))
            if not result.accepted:
                log.warning("own verdict refused: %s", result.reason)

        from app.node.training.config import TrainingConfig

        training = training or TrainingConfig.from_dict(self._node_config.training)
        self.verifier = Verifier(self.key, self.ledger, arch, fetch, self.config, submit, self._clock, training)
        return self.verifier

    async def on_verify_step(self, caller: bytes, proof_id: str, step: int | None) -> tuple[bytes, bytes] | None:
        """Serves a verifier the committed step it asks for (the stage protocol's VerifyStep)."""
        return await asyncio.get_running_loop().run_in_executor(None, self.steps.serve, proof_id, step)

    # --- gossip ---------------------------------------------------------------------------------

    async def gossip_round(self, peer: Any, send: GossipSend) -> int:
        """Push what ``peer`` has not had from us, pull what we have not had from it; returns new records."""
        return await self._gossip.round(peer, send)

    async def on_gossip(self, sender_id: bytes, payloads: list[bytes]) -> list[bytes]:
        """Server side of ``gossip_round``: store what came, answer with records after their cursor."""
        return await self._gossip.serve(payloads)

    # --- commands -------------------------------------------------------------------------------

    def query(self, what: str) -> Any:
        address = self.session.wallet.address
        if what == "wallet":
            return wallet_api.wallet_summary(self.session.wallet, self.session.unlocked)
        if what == "history":
            return wallet_api.history_rows(self.ledger, address)
        if what == "earnings":
            return wallet_api.earning_rows(self.ledger, address)
        if what == "proposals":
            return wallet_api.proposal_rows(self.ledger, int(self._clock() * 1000))
        if what == "ledger":
            return {"state_hash": self.ledger.state_hash(), **self.ledger.totals()}
        raise ValueError(f"unknown query '{what}'")

    def handles(self, command: Any) -> bool:
        return isinstance(command, WalletCommand) or (
            isinstance(command, Query) and command.what in ("wallet", "history", "earnings", "proposals", "ledger"))

    def handle(self, command: Any) -> Any:
        """Blocking (SQLite, scrypt): call it from the executor."""
        if isinstance(command, Query):
            return self.query(command.what)
        result = self.session.command(command.action, dict(command.args))
        self.publish_state()
        return result

    def close(self) -> None:
        self.ledger.close()

