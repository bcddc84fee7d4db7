"""The inference market: a quote locked at Open, balance checked before any work, payment of
exactly price x tokens through signed ledger records, one per token as the tokens are served."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.crypto.keys import PrivateKey
from app.node.economics.constants import from_settings
from app.node.economics.genesis import genesis_record
from app.node.economics.ledger import Ledger
from app.node.economics.pricing import price_per_token
from app.node.economics.records import Record
from app.node.runtime.devnet_funding import DEVNET_GENESIS, GRANT, devnet_genesis_settings
from app.node.runtime.inference_client import GenerationFailed, RemoteGenerator
from app.node.runtime.inference_market import InferenceMarket
from app.node.runtime.inference_service import InferenceService
from app.node.training.config import TrainingConfig
from app.node.training.stage import StageWorker
from tests.inference.helpers import ARCH, PROMPT, RANGES, genesis_stage, reference_tokens
from tests.inference.test_sessions import network
from tests.p2p.helpers import run

CONFIG = from_settings(devnet_genesis_settings())
MS_PER_LAYER = (20.0, 80.0, 300.0)  # each provider measured another speed: three prices


def _markets(tmp_path: Path, funded: PrivateKey | None) -> tuple[list[InferenceService], list[Ledger], list[str]]:
    now = int(time.time() * 1000)
    services, ledgers, providers = [], [], []
    for n, layer_range in enumerate(RANGES):
        ledger = Ledger(tmp_path / f"provider{n}", CONFIG)
        if funded is not None:
            assert ledger.submit(genesis_record(DEVNET_GENESIS, CONFIG, {funded.address: GRANT}, now).to_bytes(),
                                 now + 1).accepted
        provider = PrivateKey.generate().address
        stage = StageWorker(genesis_stage(layer_range), TrainingConfig())
        market = InferenceMarket(ledger, CONFIG, provider, ms_per_layer=lambda ms=MS_PER_LAYER[n]: ms)
        services.append(InferenceService(lambda s=stage: s, market=market))
        ledgers.append(ledger)
        providers.append(provider)
    return services, ledgers, providers


def test_ledger_balances_move_by_exactly_price_times_tokens(tmp_path: Path) -> None:
    client_key = PrivateKey.generate()
    services, ledgers, providers = _markets(tmp_path, client_key)
    tokens = 5

    paid_so_far: list[list[int]] = []

    def transfers(ledger: Ledger) -> int:
        return sum(1 for raw in ledger.records_since(0)[0] if Record.from_bytes(raw).kind == "transfer")

    def on_token(index: int, _token: int) -> None:
        # token `index` was just served by every stage, whose step carried the payment for the one before
        paid_so_far.append([transfers(ledger) for ledger in ledgers])

    async def scenario() -> tuple[list[int], int, list[int]]:
        async with network(services, client_key=client_key) as (client, _nodes, _services):
            generator = RemoteGenerator(client, ARCH, economics=CONFIG,
                                        next_seq=lambda: ledgers[0].next_seq(client_key.address))
            result = await generator.generate(PROMPT, tokens, temperature=0, on_token=on_token)
            assert result.tokens == reference_tokens(tokens)
            return result.tokens, result.paid, list(result.prices)

    try:
        _, paid, prices = run(scenario(), timeout=120)
        # each price is seed 001's formula for what that provider measured, at its utilisation
        assert prices == [price_per_token(CONFIG, utilisation=0.0, ms_per_layer=ms, accepted_proofs=0, slashes=0)
                          for ms in MS_PER_LAYER]
        assert len(set(prices)) == 3
        assert paid == sum(p * tokens for p in prices)
        # paid as served: one record per token, at most one token on credit, the last paid at Close
        assert paid_so_far == [[index] * len(RANGES) for index in range(tokens)]
        assert [transfers(ledger) for ledger in ledgers] == [tokens] * len(RANGES)
        # gossip: every ledger sees every payment record; balances then agree everywhere
        records = [raw for ledger in ledgers for raw in ledger.records_since(0)[0]]
        for ledger in ledgers:
            ledger.submit_many(records)
        for ledger in ledgers:
            for provider, price in zip(providers, prices, strict=True):
                assert ledger.balance(provider).available == price * tokens
            fees = len(RANGES) * tokens * CONFIG.min_transfer_fee
            assert ledger.balance(client_key.address).available == GRANT - paid - fees
    finally:
        for ledger in ledgers:
            ledger.close()


def test_insufficient_balance_is_refused_before_any_work_with_the_price(tmp_path: Path) -> None:
    services, ledgers, _ = _markets(tmp_path, None)  # nobody funded the client

    async def scenario() -> None:
        async with network(services) as (client, _nodes, _services):
            with pytest.raises(GenerationFailed, match=r"insufficient balance: the price is \d+ micro-NEURO per token"):
                await RemoteGenerator(client, ARCH, economics=CONFIG, next_seq=lambda: 1).generate(
                    PROMPT, 5, temperature=0)

    try:
        run(scenario(), timeout=120)
        assert all(s.sessions == 0 for s in services)
        assert all(ledger.records_since(0)[0] == [] for ledger in ledgers)  # nothing was paid or charged
    finally:
        for ledger in ledgers:
            ledger.close()


def test_a_client_that_stops_paying_gets_no_further_token(tmp_path: Path) -> None:
    client_key = PrivateKey.generate()
    services, ledgers, _ = _markets(tmp_path, client_key)

    class StopsPaying(RemoteGenerator):
        def _payment(self, hop):  # noqa: ANN001, ANN202 (pays for nothing after the first token)
            payment, amount = super()._payment(hop)
            return (payment, amount) if hop.paid_tokens == 0 and hop.tokens == 0 else (b"", 0)

    async def scenario() -> list[int]:
        served: list[int] = []
        async with network(services, client_key=client_key) as (client, _nodes, _services):
            generator = StopsPaying(client, ARCH, economics=CONFIG, next_seq=lambda: 1)
            with pytest.raises(GenerationFailed, match=r"pay for the 1 token\(s\) served before asking for the next"):
                await generator.generate(PROMPT, 5, temperature=0, on_token=lambda i, _t: served.append(i))
        return served

    try:
        assert run(scenario(), timeout=120) == [0]  # one token on credit, then nothing more is computed
        assert all(ledger.records_since(0)[0][1:] == [] for ledger in ledgers)  # only the grant: nothing paid
        assert all(service.sessions == 0 for service in services)  # closed; the debt stays on record
        with pytest.raises(Exception, match="unpaid"):
            services[0].market.admit(client_key.public_key.data, services[0].market.quote(0.0, 4))
    finally:
        for ledger in ledgers:
            ledger.close()


def test_inference_served_becomes_an_accepted_inference_proof(tmp_path: Path) -> None:
    """Serving nodes earn inference proofs (tokens served per layer held), checked by the ledger's
    PoNW rules like any other proof."""
    from app.node.config import NodeConfig
    from app.node.events import ProofAccepted
    from app.node.runtime.economy import EconomyService
    from app.wallet.keystore import Keystore

    class Clock:
        now = 1_800_000_000.0

        def __call__(self) -> float:
            return self.now

    clock, events = Clock(), []
    keystore = Keystore(tmp_path / "server", use_keyring=False, scrypt_n=2**10)
    key = keystore.create("pw for tests")
    economy = EconomyService(key, NodeConfig(data_dir=tmp_path / "server", economics={"preset": "devnet"}),
                             events.append, "T3", keystore=keystore, clock=clock)
    try:
        for _ in range(6):
            clock.now += 0.01
            economy.on_inference(1, 2)  # one generated token through 2 layers held
        economy.on_inference(0, 2)  # a piece of a long prompt: no token, nothing claimed
        clock.now += 1.0  # the devnet epoch ended
        assert sorted(economy.close_epoch()) == ["inference", "uptime"]
        proof = next(e for e in events if isinstance(e, ProofAccepted) and e.proof_kind == "inference")
        assert proof.reward_units > 0
    finally:
        economy.close()
