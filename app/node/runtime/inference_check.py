"""Generate through a running network and check the tokens against in-process generation.

The devnet's ``--generate PROMPT`` ends its run with this: a client joins through the tracker,
generates greedily through an inference-session chain, then downloads the live weights of exactly
the holders that served the last step of each stage (the Weights call) and runs
``model.generation.generate`` on them in this process. Equal tokens mean the network computed
what the model computes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.crypto.keys import PrivateKey
from app.node.economics.constants import EconomicsConfig, from_settings
from app.node.economics.genesis import genesis_record
from app.node.economics.ledger import Ledger
from app.node.model.architecture import ModelArchitecture
from app.node.model.generation import generate
from app.node.model.shard import ModelShard
from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import P2PError
from app.node.p2p.node import P2PNode
from app.node.runtime.devnet_funding import DEVNET_GENESIS, GRANT
from app.node.runtime.inference_client import GenerationFailed, RemoteGenerator
from app.node.runtime.p2p_transport import P2PWeights
from app.node.tokenizer import NeuroTokenizer
from app.node.training.transport import RetryElsewhere


def fund_inference_client(data_dirs: Iterable[Path], settings: dict[str, Any], now_ms: int) -> PrivateKey:
    """A fresh client key with the devnet's genesis grant written into every node's ledger before
    the nodes start (as runtime/devnet_funding.py does for verifiers), so it can pay for tokens."""
    config = from_settings(settings)
    key = PrivateKey.generate()
    record = genesis_record(DEVNET_GENESIS, config, {key.address: GRANT}, now_ms)
    for d in data_dirs:
        d.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(d, config)
        try:
            result = ledger.submit(record.to_bytes(), now_ms + 1)
            if not result.accepted and result.status != "duplicate":
                raise RuntimeError(f"funding the inference client was refused: {result.reason}")
        finally:
            ledger.close()
    return key


async def generate_and_compare(trackers: list[str], arch: ModelArchitecture, prompt: str, max_tokens: int, *,
                               join_wait_s: float = 30.0, config: P2PConfig | None = None,
                               key: PrivateKey | None = None, economics: EconomicsConfig | None = None
                               ) -> dict[str, Any]:
    """A JSON-able report: tokens, text, tokens/s, time to first token, the holders used, the
    price paid, and whether the tokens equal in-process greedy generation with the holders' weights.
    ``key`` pays (a funded key: fund_inference_client) under the ledger rules ``economics``."""
    tokenizer = NeuroTokenizer.genesis()
    prompt_ids = tokenizer.encode(prompt) or [tokenizer.bos_id]
    node = P2PNode(key or PrivateKey.generate(), trackers=list(trackers), config=config or P2PConfig(use_upnp=False))
    try:
        await node.start()
        generator = RemoteGenerator(node, arch, economics=economics, next_seq=lambda: 1)
        await generator.plan_within(join_wait_s, poll_s=0.5)
        result = await generator.generate(prompt_ids, max_tokens, temperature=0)
        stages = []
        for served_by in result.holders:
            holder = served_by[-1]
            record = next(r for r in await node.who_holds(_first_layer(stages)) if r.node_id.hex() == holder)
            layer_range = (record.layer_start, record.layer_end)
            state = await P2PWeights(node).fetch(layer_range, prefer=holder)
            shard = ModelShard(arch, *layer_range, with_embedding=layer_range[0] == 0,
                               with_head=layer_range[1] == arch.layers)
            shard.load_state_dict(state)
            stages.append(shard)
    except (OSError, P2PError, RetryElsewhere, StopIteration) as exc:
        raise GenerationFailed(f"the network could not generate or show its weights: {exc}") from exc
    finally:
        await node.stop()
    expected = generate(stages, prompt_ids, max_tokens, temperature=0)
    return {"prompt": prompt, "tokens": result.tokens, "text": tokenizer.decode(result.tokens),
            "tokens_per_s": round(result.tokens_per_s, 2), "first_token_s": round(result.first_token_s, 3),
            "holders": [[h[:12] for h in served] for served in result.holders],
            "replacements": result.replacements, "price_paid": result.paid, "prices_per_token": list(result.prices),
            "equals_in_process": expected == result.tokens}


def _first_layer(stages: list[ModelShard]) -> int:
    return stages[-1].layer_range[1] if stages else 0
