"""Verify mode end to end in one process: real stages train the tiny model, real economies make
proofs, real ledgers gossip over real gRPC on loopback, and two staked verifiers fetch committed
steps from the provers with the stage protocol's VerifyStep and re-execute them (forward,
backward, optimizer step).

An honest prover and a lazy one (it claims one made-up step for every step it ran) are checked;
the lazy one is slashed on every ledger and the honest one paid, and the verifiers earn
verification proofs. A single griefing verifier that fails an honest proof is refuted by an
honest one and loses its bond, and the honest prover is paid in full.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import torch

from app.crypto.keys import PrivateKey
from app.node.config import NodeConfig
from app.node.economics import spotcheck
from app.node.economics.constants import neuro
from app.node.economics.genesis import genesis_record
from app.node.economics.records import Record
from app.node.p2p.node import P2PNode
from app.node.runtime.economy import EconomyService
from app.node.runtime.ledger_gossip import GOSSIP_TOPIC
from app.node.runtime.verification import LEAVES_ONLY, MAX_SAMPLE_BYTES
from app.node.training.pipeline import PipelineDriver
from app.node.training.stage import StageWorker, build_shard
from app.wallet.keystore import Keystore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_helpers import ARCH, patterned_batch, tiny_config  # noqa: E402

PASSWORD = "pw for tests"
GENESIS = PrivateKey((4242).to_bytes(32, "big"))
TRAINING = tiny_config(inner_steps=100)
ECONOMICS = {"preset": "devnet", "genesis_public_key": GENESIS.public_key.data.hex(), "spot_check_rate": 1.0, "spot_check_steps": 8,
             "epoch_ms": 2000, "challenge_window_ms": 8000}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Node:
    def __init__(self, tmp_path: Path, name: str, clock: Clock, lazy_steps: int = 0) -> None:
        data_dir = tmp_path / name
        self.name = name
        keystore = Keystore(data_dir, use_keyring=False, scrypt_n=2**10)
        self.key = keystore.create(PASSWORD)
        self.economy = EconomyService(self.key, NodeConfig(data_dir=data_dir, economics=dict(ECONOMICS)),
                                      lambda e: None, "T4", keystore=keystore, clock=clock, lazy_steps=lazy_steps)
        self.p2p = P2PNode(self.key)
        self.p2p.set_gossip_handler(GOSSIP_TOPIC, self.economy.on_gossip)
        self.p2p.set_verify_handler(self.economy.on_verify_step)
        self.stage: StageWorker | None = None
        self.driver: PipelineDriver | None = None

    def train_on(self, seed: int) -> None:
        def committed(stage: StageWorker, info) -> None:  # what the trainer reports as StepInfo
            self.economy.on_work(type("Step", (), dict(step=info.step, batches=info.microbatches, tokens=info.tokens,
                                                       layers=stage.layer_range, role="driver+validator",
                                                       hash_before=info.hash_before, hash_after=info.hash_after,
                                                       driver=info.driver))())

        shard = build_shard(ARCH, (0, ARCH.layers), with_embedding=True, with_head=True, seed=seed)
        steps = self.economy.steps
        self.stage = StageWorker(shard, TRAINING, on_commit=committed, on_forward=steps.on_forward,
                                 on_backward=steps.on_backward, on_applied=steps.on_applied)
        self.driver = PipelineDriver(self.name, self.stage, [], None, micro_batches=TRAINING.micro_batches)


async def gossip_all(nodes: list[Node]) -> None:
    for a in nodes:
        for b in nodes:
            if a is not b:
                async def send(peer, payloads, a=a):  # noqa: ANN001, ANN202
                    return await a.p2p.gossip(peer, GOSSIP_TOPIC, payloads, 10.0)
                await a.economy.gossip_round(b.p2p.address, send)


def fund(nodes: list[Node], verifiers: list[Node], clock: Clock) -> None:
    config = nodes[0].economy.config
    at = int(clock() * 1000)
    records = [genesis_record(GENESIS, config, {v.key.address: neuro(1000) for v in verifiers}, at)]
    records += [Record.create(v.key, "stake", config.network_id, at + 1, {"amount": neuro(200)}, seq=1)
                for v in verifiers]
    for node in nodes:
        for record in records:
            assert node.economy.ledger.submit(record.to_bytes(), at + 1).accepted


@pytest.fixture
def one_thread():  # noqa: ANN201
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


async def _scenario(tmp_path: Path, griefer: bool) -> dict:
    clock = Clock()
    honest, lazy = Node(tmp_path, "honest", clock), Node(tmp_path, "lazy", clock, lazy_steps=1)
    verifiers = [Node(tmp_path, f"verifier{i}", clock) for i in range(2)]
    nodes = [honest, lazy, *verifiers]
    fund(nodes, verifiers, clock)
    for prover in (honest, lazy):
        prover.train_on(seed=0)
    routes = {n.key.public_key.data: n for n in nodes}
    for node in nodes:
        await node.p2p.start()
    try:
        for v in verifiers:
            async def fetch(author: bytes, proof_id: str, step: int, v=v) -> list[bytes]:  # noqa: ANN001
                header, blob = await v.p2p.verify_step(routes[author].p2p.address, proof_id,
                                                       None if step == LEAVES_ONLY else step, 10.0, MAX_SAMPLE_BYTES)
                return [header] if step == LEAVES_ONLY else [header, blob]
            v.economy.start_verifying(ARCH, fetch, TRAINING)
        epoch_s = honest.economy.config.epoch_ms / 1000
        clock.now = (int(clock.now / epoch_s) + 1) * epoch_s + 0.1  # start of an epoch
        for step in range(3):
            clock.now += 0.3
            for prover in (honest, lazy):
                await prover.driver.train_step(step, patterned_batch(TRAINING, step))
        clock.now += epoch_s
        for node in nodes:
            node.economy.close_epoch()
        await gossip_all(nodes)
        stored, _, _ = verifiers[0].economy.ledger.verification_work_since(0)
        proofs = {p: [r for r in stored if r.author == p.key.public_key.data] for p in (honest, lazy)}
        assert len(proofs[honest]) == len(proofs[lazy]) == 1
        if griefer:  # verifier 1 forges a fail on the honest proof before anyone checks it
            target = proofs[honest][0]
            forged = spotcheck.CheckResult(False, "forged", spotcheck.Evidence(0, b"\1" * 32, b"\1" * 32, 10**9))
            g = verifiers[1]
            forged_record = spotcheck.challenge_record(  # 1 ms after the proofs: applied after them
                g.key, g.economy.config, target.record_id, forged, g.economy.ledger.next_seq(g.key.address),
                int(clock() * 1000) + 1)
            g.economy.ledger.submit(forged_record.to_bytes())
            g.economy.verifier._judged.add(target.record_id)
            await gossip_all(nodes)
            assert honest.economy.ledger.proof_standing(target.record_id) == (True, 0)
        for v in verifiers:  # verifier 0 first; verifier 1 then referees what 0 failed
            clock.now += 0.2
            await v.economy.verifier.round()
            await gossip_all(nodes)
        clock.now += epoch_s  # late in the windows: the passes the verifiers held back are signed
        for v in verifiers:
            await v.economy.verifier.round()
        await gossip_all(nodes)
        for node in nodes:  # the verifiers' verification proofs
            node.economy.close_epoch()
        await gossip_all(nodes)
        clock.now += honest.economy.config.challenge_window_ms / 1000 + 2 * epoch_s
        for node in nodes:
            node.economy.close_epoch()  # uptime proofs carry every ledger's clock past the windows
        await gossip_all(nodes)
        await gossip_all(nodes)
        ledger = honest.economy.ledger
        return {
            "hashes": {n.economy.ledger.state_hash() for n in nodes},
            "honest_status": ledger.record_status(proofs[honest][0].record_id),
            "lazy_status": ledger.record_status(proofs[lazy][0].record_id),
            "honest_earned": ledger.earnings(honest.key.address, by="kind"),
            "lazy_earned": ledger.earnings(lazy.key.address, by="kind"),
            "verifier_earned": [ledger.earnings(v.key.address, by="kind") for v in verifiers],
            "verifier_balances": [ledger.balance(v.key.address) for v in verifiers],
            "verdicts": [v.economy.verifier.verdicts for v in verifiers],
        }
    finally:
        for node in nodes:
            await node.p2p.stop()
            node.economy.close()


def test_verifiers_slash_the_lazy_node_and_pay_the_honest_one(tmp_path: Path, one_thread) -> None:
    out = asyncio.run(asyncio.wait_for(_scenario(tmp_path, griefer=False), 180))
    assert len(out["hashes"]) == 1  # every ledger agrees
    assert out["lazy_status"][0] == "slashed", out
    assert out["honest_status"][0] == "applied" and out["honest_earned"].get("training", 0) > 0
    assert "training" not in out["lazy_earned"]
    for earned in out["verifier_earned"]:
        assert earned.get("verification", 0) > 0
    reasons = [reason for verdicts in out["verdicts"] for _, passed, reason in verdicts if passed]
    assert reasons and all(r == "bitwise equal" for r in reasons)  # same build, same threads
    # The lazy node's made-up steps have real outputs: only re-running the update catches them.
    fails = [reason for verdicts in out["verdicts"] for _, passed, reason in verdicts if not passed]
    assert fails and all("update differs" in r for r in fails), fails


def test_a_single_griefing_verifier_cannot_slash_an_honest_node(tmp_path: Path, one_thread) -> None:
    out = asyncio.run(asyncio.wait_for(_scenario(tmp_path, griefer=True), 180))
    assert len(out["hashes"]) == 1
    assert out["honest_status"][0] == "applied", out
    assert out["honest_earned"].get("training", 0) > 0
    griefer, referee = out["verifier_balances"][1], out["verifier_balances"][0]
    assert griefer.available < referee.available  # the refuted bond is gone
    assert out["lazy_status"][0] == "slashed"  # the griefer's own honest checks still count


def _one_step(log, stage, driver: str, step: int, width: int) -> None:
    """What a stage without the head tells its step log for a one-micro-batch step."""
    from app.node.training.stage import CommitInfo
    from app.node.training.stage_weights import state_hash

    x = torch.randn(2, 3, width)
    before = state_hash(stage.shard.state_dict())
    log.on_forward(stage, driver, step, 0, [x], stage.shard(x))
    log.on_backward(stage, driver, step, 0, torch.ones(2, 3, width))
    with torch.no_grad():
        stage.shard.weight.add_(0.01)
    log.on_applied(stage, CommitInfo(driver, step, 1, 6, 0.0, step + 1, before,
                                     state_hash(stage.shard.state_dict()), 1e-3, None))


def test_the_step_log_keeps_within_its_memory_budget_and_frees_expired_samples() -> None:
    from types import SimpleNamespace

    from app.node.economics.constants import from_settings
    from app.node.runtime.verification import StepLog

    layer = torch.nn.Linear(64, 64)  # 4160 floats: 16.6 kB of weights per snapshot, 33 kB a step
    stage = SimpleNamespace(shard=layer, layer_range=(1, 2), is_first=False, is_last=False)
    log = StepLog(from_settings({"preset": "devnet"}), max_bytes_kept=80_000)
    kept = []
    for step in range(4):
        _one_step(log, stage, "d", step, 64)
        kept.append(log.seal("d", step))
    assert [s is not None for s in kept] == [True, True, False, False]  # the third would pass 80 kB
    assert log.seal("d", 99) is None  # it never ran here: not claimable
    assert StepLog(from_settings({"preset": "devnet"})).seal("d", 1) == []  # no stage feeds that log
    log.publish("p", 0, kept[0] + kept[1])
    log.expire(current_epoch=100)  # long after the window
    _one_step(log, stage, "d", 5, 64)
    assert log.seal("d", 5) is not None  # the budget came back


def test_a_step_whose_weights_changed_mid_way_or_that_ran_partly_elsewhere_is_not_claimed() -> None:
    from types import SimpleNamespace

    from app.node.economics.constants import from_settings
    from app.node.runtime.verification import StepLog
    from app.node.training.stage import CommitInfo
    from app.node.training.stage_weights import state_hash

    layer = torch.nn.Linear(8, 8)
    stage = SimpleNamespace(shard=layer, layer_range=(1, 2), is_first=False, is_last=False)
    log = StepLog(from_settings({"preset": "devnet"}))
    x = torch.randn(1, 2, 8)
    log.on_forward(stage, "d", 0, 0, [x], layer(x))
    log.on_backward(stage, "d", 0, 0, torch.ones(1, 2, 8))
    with torch.no_grad():
        layer.weight.add_(1.0)  # another driver's commit between this step's forward and its commit
    now = state_hash(layer.state_dict())
    log.on_applied(stage, CommitInfo("d", 0, 1, 2, 0.0, 1, now, now, 1e-3, None))
    assert log.seal("d", 0) is None
    log.on_forward(stage, "d", 1, 0, [x], layer(x))  # micro-batch 1 ran on another replica
    log.on_backward(stage, "d", 1, 0, torch.ones(1, 2, 8))
    log.on_applied(stage, CommitInfo("d", 1, 2, 4, 0.0, 2, now, now, 1e-3, None))
    assert log.seal("d", 1) is None
    _one_step(log, stage, "d", 2, 8)
    assert log.seal("d", 2) is not None


def test_a_stage_that_numbers_steps_locally_still_finds_its_driver_s_sample() -> None:
    from types import SimpleNamespace

    from app.node.economics.constants import from_settings
    from app.node.economics.spotcheck import INPUT
    from app.node.runtime.verification import StepLog

    layer = torch.nn.Linear(8, 8)
    stage = SimpleNamespace(shard=layer, layer_range=(1, 2), is_first=False, is_last=False)
    log = StepLog(from_settings({"preset": "devnet"}))
    for driver_step in (40, 41):
        _one_step(log, stage, "driver-a", driver_step, 8)
        sealed = log.seal("driver-a", driver_step - 40)  # the worker's own count: 0, 1
        assert sealed is not None and len(sealed) == 1
        assert sealed[0].meta["inner_step"] == driver_step and f"{INPUT}0.0" in sealed[0].tensors
