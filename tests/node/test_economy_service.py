"""The runtime's economy: proofs from real training steps, gossip over real gRPC, wallet answers."""

import asyncio
from dataclasses import dataclass

import pytest

from app.node.config import NodeConfig
from app.node.events import ProofAccepted, Query, WalletCommand
from app.node.p2p.node import P2PNode
from app.node.runtime.economy import GOSSIP_TOPIC, EconomyService, _parse_batch
from app.ui import records
from app.wallet.errors import WalletError, WrongPassword
from app.wallet.keystore import Keystore

PASSWORD = "pw for tests"


@dataclass
class Step:  # the fields of training.trainer.StepInfo the economy reads
    step: int
    batches: int
    tokens: int
    layers: tuple[int, int]
    role: str
    hash_before: str
    hash_after: str


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make_service(tmp_path, name: str, clock: Clock, events: list):
    data_dir = tmp_path / name
    keystore = Keystore(data_dir, use_keyring=False, scrypt_n=2**10)
    key = keystore.create(PASSWORD)
    config = NodeConfig(data_dir=data_dir, economics={"preset": "devnet"})
    return EconomyService(key, config, events.append, "T4", keystore=keystore, clock=clock)


def test_training_steps_become_accepted_proofs_and_then_rewards(tmp_path) -> None:
    clock, events = Clock(), []
    economy = make_service(tmp_path, "a", clock, events)
    for i in range(3):
        economy.on_work(Step(i + 1, 2, 512, (0, 4), "driver+validator", f"{i:064x}", f"{i + 1:064x}"))
    clock.now += 1.0  # one devnet epoch
    assert sorted(economy.close_epoch()) == ["training", "uptime"]
    assert economy.close_epoch() == []  # one proof per kind and epoch
    proofs = [e for e in events if isinstance(e, ProofAccepted)]
    assert {p.proof_kind for p in proofs} == {"uptime", "training"}
    assert all(p.reward_units > 0 for p in proofs)
    assert economy.query("wallet")["available_units"] == 0  # still inside the challenge window
    clock.now += 5.0
    economy.close_epoch()
    assert economy.query("wallet")["available_units"] > 0
    earnings = records.read_earnings(economy.query("earnings"))
    assert {row.kind for row in earnings} >= {"training", "uptime"}
    economy.close()


def test_no_training_proof_when_weights_did_not_change(tmp_path) -> None:
    clock, events = Clock(), []
    economy = make_service(tmp_path, "a", clock, events)
    economy.on_work(Step(1, 2, 512, (0, 4), "worker", "ab" * 32, "ab" * 32))
    clock.now += 1.0
    assert economy.close_epoch() == ["uptime"]
    economy.close()


def test_wallet_commands_need_the_password(tmp_path) -> None:
    clock, events = Clock(), []
    economy = make_service(tmp_path, "a", clock, events)
    other = make_service(tmp_path, "b", clock, [])
    send = {"to": other.key.address, "amount_units": 10, "password": "wrong"}
    with pytest.raises(WrongPassword):
        economy.handle(WalletCommand("send", tuple(send.items())))
    with pytest.raises(WalletError):  # right password, but nothing to send yet
        economy.handle(WalletCommand("send", tuple({**send, "password": PASSWORD}.items())))
    with pytest.raises(WalletError, match="lacks 'amount_units'"):
        economy.handle(WalletCommand("stake", (("password", PASSWORD),)))
    assert economy.handle(WalletCommand("unlock", (("password", PASSWORD),))) is True
    assert records.read_wallet(economy.handle(Query("wallet"))).unlocked
    records.read_history(economy.handle(Query("history")))
    records.read_proposals(economy.handle(Query("proposals")))
    economy.close()
    other.close()


def test_gossip_batches_with_bad_headers_are_dropped() -> None:
    assert _parse_batch([]) == (None, [])
    assert _parse_batch([b"not json", b"rec"]) == (None, [])
    assert _parse_batch([b'{"v": 1, "cursor": -1}']) == (None, [])
    assert _parse_batch([b'{"v": 1, "cursor": true}']) == (None, [])
    assert _parse_batch([b'{"v": 1, "cursor": 3}', b"r"]) == (3, [b"r"])


def test_two_nodes_agree_on_the_ledger_after_gossip_over_grpc(tmp_path) -> None:
    async def scenario() -> None:
        clock = Clock()
        services = [make_service(tmp_path, name, clock, []) for name in ("a", "b")]
        for index, economy in enumerate(services):
            economy.on_work(Step(1, 1, 256, (0, 2), "worker", f"{index:064x}", f"{index + 9:064x}"))
        clock.now += 1.0
        for economy in services:
            economy.close_epoch()
        assert services[0].ledger.state_hash() != services[1].ledger.state_hash()
        nodes = [P2PNode(s.key) for s in services]
        for node, economy in zip(nodes, services, strict=True):
            node.set_gossip_handler(GOSSIP_TOPIC, economy.on_gossip)
            await node.start()
        try:
            async def send(peer, payloads):
                return await nodes[0].gossip(peer, GOSSIP_TOPIC, payloads, 5.0)

            pulled = await services[0].gossip_round(nodes[1].address, send)
            assert pulled == 2  # b's uptime and training proofs
            assert services[0].ledger.state_hash() == services[1].ledger.state_hash()
            assert await services[0].gossip_round(nodes[1].address, send) == 0  # nothing new either way
        finally:
            for node in nodes:
                await node.stop()
            for economy in services:
                economy.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
