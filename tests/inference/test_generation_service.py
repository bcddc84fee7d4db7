"""The app's Generate / QuoteGeneration commands (runtime/generation_service.py) when this node does
not hold the whole model: the quote is what the holders lock, the text streams as TextGenerated
events while the tokens are served, and the cost is exactly what the wallet paid (price x tokens)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from app.crypto.keys import PrivateKey
from app.node.events import Generate, QuoteGeneration, TextGenerated
from app.node.runtime.generation_service import GenerationService, NodeView
from app.node.tokenizer import NeuroTokenizer
from tests.inference.helpers import ARCH, reference_tokens
from tests.inference.test_market import CONFIG, _markets
from tests.inference.test_sessions import network
from tests.p2p.helpers import run

TOKENIZER = NeuroTokenizer.genesis()


def test_generate_through_the_network_streams_text_and_costs_price_times_tokens(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    services, ledgers, _providers = _markets(tmp_path, key)
    wallet_ledger = ledgers[0]  # this node's own ledger: it knows the grant and keeps the payments
    events: list[object] = []

    async def scenario() -> tuple[dict, dict]:
        async with network(services, client_key=key) as (client, _nodes, _services):
            service = GenerationService(NodeView(
                architecture=lambda: ARCH, tokenizer=lambda: TOKENIZER, stage=lambda: None, sync=lambda: None,
                p2p=lambda: client, economy=lambda: SimpleNamespace(key=key, config=CONFIG, ledger=wallet_ledger),
                emit=events.append))
            quote = await service.quote(QuoteGeneration(max_tokens=6))
            result = await service.generate(Generate(prompt="hello", max_tokens=6, temperature=0.0,
                                                     request_id="r1"))
            return quote, result

    try:
        quote, result = run(scenario(), timeout=120)
        expected = reference_tokens(6, TOKENIZER.encode("hello"))
        assert result["where"] == "the network" and result["stages"] == 3 and result["tokens"] == len(expected)
        assert result["text"] == TOKENIZER.decode(expected)
        pieces = [e for e in events if isinstance(e, TextGenerated)]
        assert pieces and all(p.request_id == "r1" for p in pieces)
        assert "".join(p.text for p in pieces) == result["text"]
        assert quote["where"] == "the network" and quote["price_per_token_units"] > 0
        assert quote["most_units"] == 6 * quote["price_per_token_units"]
        assert result["cost_units"] == len(expected) * quote["price_per_token_units"]  # no session got busier
        assert all(service.sessions == 0 for service in services)
    finally:
        for ledger in ledgers:
            ledger.close()
