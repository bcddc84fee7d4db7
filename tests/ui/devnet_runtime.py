"""A small devnet runtime for the GUI tests, following app/node/runtime_api.py.

It trains a real (tiny) torch model on the engine's executor, honours pause/stop through
RunControl, and keeps value on the real ledger (app/node/economics) with the real wallet, so a
vote clicked in the window lands in the ledger and a wrong password comes back as the wallet's
own error. It stands in for app/node/runtime until that lands; the engine around it is the real
NodeEngine.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.node.economics.constants import EconomicsConfig, neuro
from app.node.economics.ledger import Ledger
from app.node.economics.records import Record
from app.node.events import (
    ActivityChanged,
    BalanceChanged,
    Command,
    LayersAssigned,
    ModesChanged,
    NetworkChanged,
    NodeState,
    ProposalChanged,
    Query,
    QuorumChanged,
    SetModes,
    StepDone,
    WalletCommand,
)
from app.node.hardware import SpeedTier
from app.node.modes import NodeCapabilities, apply_toggles, propose_modes
from app.node.runtime_api import RuntimeContext
from app.wallet.keys import PrivateKey
from app.wallet.keystore import Keystore
from app.wallet.wallet import Wallet

PASSWORD = "correct horse battery"
GENESIS_KEY = PrivateKey((4242).to_bytes(32, "big"))
PROPOSER_KEY = PrivateKey((4343).to_bytes(32, "big"))
TEXT = b"volunteers train one shared language model together and earn for the work they prove. " * 20


def fast_keystore(data_dir: Path) -> Keystore:
    """The file keystore with a cheap scrypt (2**14): tests must not touch the OS keyring."""
    return Keystore(data_dir, use_keyring=False, scrypt_n=2**14)


def devnet_economics() -> EconomicsConfig:
    # Discussion ends at once and voting stays open long enough for a test to click through.
    return EconomicsConfig.devnet(genesis_public_key=GENESIS_KEY.public_key.data.hex(),
                                  discussion_ms=300, voting_ms=120_000)


@dataclass
class DevnetOptions:
    step_pause_s: float = 0.03  # devnet pacing: ~30 steps/s keeps events flowing without hogging CPU
    stake_units: int = neuro(200)
    proposals: list[tuple[str, list[tuple[str, str]], int]] = field(default_factory=lambda: [
        ("Common English pairs", [("74", "68"), ("7468", "65"), ("20", "746865")], 0),  # t+h, th+e, " "+the
        ("Closed vote", [("69", "6e"), ("696e", "67")], -200_000),  # i+n, in+g  # created 200 s ago: voting is over
    ])


class DevnetEconomy:
    def __init__(self, data_dir: Path, options: DevnetOptions) -> None:
        self.config = devnet_economics()
        self.ledger = Ledger(data_dir, self.config)
        self.wallet = Wallet(fast_keystore(data_dir), self.ledger)
        self.session_unlocked = False
        self._bootstrap(options)

    def _bootstrap(self, options: DevnetOptions) -> None:
        now = int(time.time() * 1000)
        me = self.wallet.address
        cfg = self.config
        genesis = Record.create(GENESIS_KEY, "genesis", cfg.network_id, now - 300_000,
                                {"allocations": sorted([[me, neuro(1000)], [PROPOSER_KEY.address, neuro(1000)]])})
        self.ledger.submit(genesis.to_bytes(), now)
        seq = 1
        for title, merges, offset_ms in sorted(options.proposals, key=lambda p: p[2]):  # seqs in time order
            record = Record.create(PROPOSER_KEY, "proposal", cfg.network_id, now + offset_ms,
                                   {"title": title, "merges": [list(m) for m in merges]}, seq=seq)
            self.ledger.submit(record.to_bytes(), now + offset_ms)  # as if it arrived then
            seq += 1
        self.wallet.unlock(PASSWORD)
        self.wallet.stake(options.stake_units)
        self.wallet.lock()

    def balance_event(self) -> BalanceChanged:
        b = self.wallet.balance()
        return BalanceChanged(address=self.wallet.address, available_units=b.available, staked_units=b.staked,
                              pending_units=b.pending)

    def query(self, what: str) -> Any:
        if what == "wallet":
            b = self.wallet.balance()
            return {"address": self.wallet.address, "available_units": b.available, "staked_units": b.staked,
                    "pending_units": b.pending, "unlocked": self.session_unlocked}
        if what == "history":
            return [{"time": e.timestamp_ms / 1000, "kind": e.kind, "amount_units": e.amount, "fee_units": 0,
                     "counterparty": "", "status": "applied", "id": e.record_id} for e in self.wallet.history()]
        if what == "earnings":
            rows = self.ledger.history(self.wallet.address, limit=10_000, kinds=("reward",))
            return [{"day": time.strftime("%Y-%m-%d", time.gmtime(e.timestamp_ms / 1000)), "kind": e.detail,
                     "units": e.amount} for e in rows]
        if what == "proposals":
            return [self._proposal(p) for p in self.ledger.proposals()]
        raise ValueError(f"unknown query '{what}'")

    def _proposal(self, p: Any) -> dict[str, Any]:
        opens, closes = p.voting_opens(self.config), p.voting_closes(self.config)
        now = time.time() * 1000
        ends = opens if now < opens else closes if now < closes else p.implementation_at(self.config)
        stakes = {voter: self.ledger.balance(voter).staked for voter in p.votes}
        yes = p.approve_weight or sum(stakes[v] for v, approve in p.votes.items() if approve)
        no = p.reject_weight or sum(stakes[v] for v, approve in p.votes.items() if not approve)
        return {"id": p.proposal_id, "phase": self.phase(p), "phase_ends_at": ends / 1000,
                "yes_weight": yes, "no_weight": no,
                "staked_supply": max(p.total_staked, self.ledger.balance(self.wallet.address).staked),
                "merges": [list(m) for m in p.merges], "proposer": p.author, "title": p.title}

    def phase(self, p: Any) -> str:
        now = time.time() * 1000
        if now < p.voting_opens(self.config):
            return "discussion"
        if now < p.voting_closes(self.config):
            return "voting"
        return p.phase.value if p.phase.value != "voting" else "closed"

    def wallet_command(self, action: str, args: dict[str, Any]) -> Any:
        password = args.get("password")
        if action == "unlock":
            self.wallet.unlock(password)
            self.session_unlocked = True
            return True
        if action == "lock":
            self.session_unlocked = False
            self.wallet.lock()
            return True
        if not self.session_unlocked or password is not None:
            self.wallet.unlock(password)
        try:
            result = self._act(action, args)
        finally:
            if not self.session_unlocked:
                self.wallet.lock()
        return result.record_id

    def _act(self, action: str, args: dict[str, Any]) -> Any:
        if action == "send":
            return self.wallet.send(args["to"], args["amount_units"], args.get("fee_units"))
        if action == "stake":
            return self.wallet.stake(args["amount_units"])
        if action == "unstake":
            return self.wallet.unstake(args["amount_units"])
        if action == "vote":
            return self.wallet.vote(args["proposal_id"], bool(args["approve"]))
        if action == "propose":
            return self.wallet.propose_merges(args["title"], [tuple(m) for m in args["merges"]])
        raise ValueError(f"unknown wallet action '{action}'")


class DevnetRuntime:
    """Trains a tiny byte-level model; see the module docstring."""

    def __init__(self, ctx: RuntimeContext, options: DevnetOptions | None = None) -> None:
        self.ctx = ctx
        self.options = options or DevnetOptions()
        self.steps_done = 0
        self.economy: DevnetEconomy | None = None
        self.active_modes: tuple[str, ...] = ()
        self._model: Any = None

    def _plan(self) -> Any:
        staked = self.economy.wallet.balance().staked if self.economy else 0
        caps = NodeCapabilities(tier=SpeedTier(self.ctx.hardware.tier.value), layers_fit=4, fits_full_model=True,
                                free_disk_bytes=50 * 2**30, staked_units=staked)
        return propose_modes(caps)

    def _build_model(self) -> None:
        import torch

        # ResourceLimits.cpu_threads: None means all but one core, which leaves the GUI thread a core
        # (with every core busy, the OS deschedules the window for 100+ ms at a time).
        torch.set_num_threads(self.ctx.config.limits.cpu_threads or max(1, (os.cpu_count() or 2) - 1))
        torch.manual_seed(0)
        self._torch = torch
        self._model = torch.nn.Sequential(torch.nn.Embedding(256, 64), torch.nn.Linear(64, 128), torch.nn.GELU(),
                                          torch.nn.Linear(128, 256))
        self._opt = torch.optim.AdamW(self._model.parameters(), lr=3e-3)
        self._data = torch.tensor(list(TEXT), dtype=torch.long)

    def _train_step(self) -> float:
        torch = self._torch
        start = torch.randint(0, len(self._data) - 33, (8,))
        batch = torch.stack([self._data[s:s + 33] for s in start.tolist()])
        logits = self._model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        self._opt.zero_grad()
        loss.backward()
        self._opt.step()
        return float(loss.detach())

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        ctx = self.ctx
        self.economy = await loop.run_in_executor(ctx.executor, DevnetEconomy, ctx.config.data_dir, self.options)
        await loop.run_in_executor(ctx.executor, self._build_model)
        plan = self._plan()
        self.active_modes = tuple(ctx.config.modes or plan.proposed)
        ctx.emit(ModesChanged(active=self.active_modes, proposed=plan.proposed, unavailable=plan.unavailable))
        ctx.emit(LayersAssigned(first_layer=0, last_layer=2, roles=("driver", "validator"), architecture_version=1,
                                total_layers=2, hidden=64, parameters=sum(p.numel() for p in self._model.parameters())))
        ctx.emit(NetworkChanged(reachable=True, peers=0, phase="genesis", replicas_per_layer=(1, 1)))
        ctx.emit(QuorumChanged(quorum_id="solo-genesis", state="training", members=("self",), speed_class="slow"))
        ctx.emit(self.economy.balance_event())
        ctx.set_state(NodeState.TRAINING, "")
        max_steps = ctx.config.max_steps
        while max_steps is None or self.steps_done < max_steps:
            paused = ctx.control.paused
            if paused:
                ctx.set_state(NodeState.PAUSED, "")
                ctx.emit(ActivityChanged(activity="paused"))
            if not await ctx.control.proceed():
                break
            if paused:
                ctx.set_state(NodeState.TRAINING, "")
            loss = await loop.run_in_executor(ctx.executor, self._train_step)
            self.steps_done += 1
            ctx.emit(StepDone(step=self.steps_done, loss=loss, tokens_per_s=8 * 32 / max(1e-3, 0.01),
                              tokens_total=self.steps_done * 256, inner_step=self.steps_done % 100,
                              inner_steps_per_sync=100))
            if self.steps_done % 10 == 1:
                ctx.emit(ActivityChanged(activity=f"training step {self.steps_done % 100} of 100"))
            if not await ctx.control.sleep(self.options.step_pause_s):
                break
        return 0

    async def handle(self, command: Command) -> Any:
        loop = asyncio.get_running_loop()
        if self.economy is None:
            raise RuntimeError("the node is still starting")
        if isinstance(command, SetModes):
            plan = self._plan()
            active = apply_toggles(plan, {m: (m in command.modes) for m in ("pipeline", "async", "data",
                                                                                "verify", "inference")})
            self.active_modes = active
            self.ctx.emit(ModesChanged(active=active, proposed=plan.proposed, unavailable=plan.unavailable))
            return active
        if isinstance(command, Query):
            if command.what == "peers":
                return []
            if command.what == "status":
                return {"steps": self.steps_done, "modes": list(self.active_modes)}
            if command.what == "reachability":
                return {"reachable": True, "relay": ""}
            return await loop.run_in_executor(self.ctx.executor, self.economy.query, command.what)
        if isinstance(command, WalletCommand):
            result = await loop.run_in_executor(self.ctx.executor, self.economy.wallet_command, command.action,
                                                dict(command.args))
            self.ctx.emit(self.economy.balance_event())
            if command.action in ("vote", "propose"):
                for p in self.economy.query("proposals"):
                    self.ctx.emit(ProposalChanged(proposal_id=p["id"], phase=p["phase"], yes_weight=p["yes_weight"],
                                                  no_weight=p["no_weight"], phase_ends_at=p["phase_ends_at"]))
            return result
        raise ValueError(f"the devnet runtime does not handle '{command.name}'")

    async def shutdown(self) -> None:
        if self.economy is not None:
            self.economy.ledger.close()
