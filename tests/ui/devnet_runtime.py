"""A small devnet runtime for the GUI tests, following app/node/runtime_api.py.

It trains a real (tiny) torch model on the engine's executor, honours pause/stop through
RunControl, and answers every wallet query and command with the node's own EconomyService over a
ledger funded at genesis, so a vote clicked in the window lands in the ledger and a wrong
password comes back as the wallet's own error. What it replaces of the real runtime is only the
training network (a new node has no funds to send, stake or vote with); the engine around it is
the real NodeEngine, and the other GUI tests run the real runtime.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.node.config import NodeConfig
from app.node.economics.constants import neuro
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
from app.node.runtime.economy import EconomyService
from app.node.runtime_api import RuntimeContext
from app.wallet.keys import PrivateKey
from app.wallet.keystore import Keystore

PASSWORD = "correct horse battery"
GENESIS_KEY = PrivateKey((4242).to_bytes(32, "big"))
PROPOSER_KEY = PrivateKey((4343).to_bytes(32, "big"))
TEXT = b"volunteers train one shared language model together and earn for the work they prove. " * 20


def fast_keystore(data_dir: Path) -> Keystore:
    """The file keystore with a cheap scrypt (2**14): tests must not touch the OS keyring."""
    return Keystore(data_dir, use_keyring=False, scrypt_n=2**14)


@dataclass
class DevnetOptions:
    step_pause_s: float = 0.03  # devnet pacing: ~30 steps/s keeps events flowing without hogging CPU
    stake_units: int = neuro(200)
    proposals: list[tuple[str, list[tuple[str, str]], int]] = field(default_factory=lambda: [
        ("Common English pairs", [("74", "68"), ("7468", "65"), ("20", "746865")], 0),  # t+h, th+e, " "+the
        ("Closed vote", [("69", "6e"), ("696e", "67")], -200_000),  # i+n, in+g  # created 200 s ago: voting is over
    ])


class DevnetEconomy:
    """The node's real EconomyService on a ledger funded at genesis, with two seeded proposals."""

    def __init__(self, data_dir: Path, options: DevnetOptions, emit: Any = lambda event: None) -> None:
        keystore = fast_keystore(data_dir)
        economics = {"preset": "devnet", "genesis_public_key": GENESIS_KEY.public_key.data.hex(),
                     "discussion_ms": 300, "voting_ms": 120_000}
        self.service = EconomyService(keystore.unlock(PASSWORD), NodeConfig(data_dir=data_dir, economics=economics),
                                      emit, "T2", keystore=keystore)
        self.config = self.service.config
        self.ledger = self.service.ledger
        self.wallet = self.service.session.wallet
        self._bootstrap(options)

    @property
    def session_unlocked(self) -> bool:
        return self.service.session.unlocked

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
        return self.service.query(what)

    def wallet_command(self, action: str, args: dict[str, Any]) -> Any:
        return self.service.session.command(action, args)


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
