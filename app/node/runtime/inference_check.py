"""Generate through a running network and check the tokens against in-process generation.

The devnet's ``--generate PROMPT`` ends its run with this: a client joins through the tracker,
generates greedily through an inference-session chain, then downloads the live weights of exactly
the holders that served the last step of each stage (the Weights call) and runs
``model.generation.generate`` on them in this process. Equal tokens mean the network computed
what the model computes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.node.model.architecture import ModelArchitecture
from app.node.model.generation import generate
from app.node.model.shard import ModelShard
from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import P2PError
from app.node.p2p.node import P2PNode
from app.node.runtime.inference_client import GenerationFailed, RemoteGenerator
from app.node.runtime.p2p_transport import P2PWeights
from app.node.tokenizer import NeuroTokenizer
from app.node.training.transport import RetryElsewhere


async def generate_and_compare(trackers: list[str], arch: ModelArchitecture, prompt: str, max_tokens: int, *,
                               join_wait_s: float = 30.0, config: P2PConfig | None = None) -> dict[str, Any]:
    """A JSON-able report: tokens, text, tokens/s, time to first token, the holders used, and
    whether the tokens equal in-process greedy generation with the holders' weights."""
    from app.crypto.keys import PrivateKey

    tokenizer = NeuroTokenizer.genesis()
    prompt_ids = tokenizer.encode(prompt) or [tokenizer.bos_id]
    node = P2PNode(PrivateKey.generate(), trackers=list(trackers), config=config or P2PConfig(use_upnp=False))
    try:
        await node.start()
        generator = RemoteGenerator(node, arch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + join_wait_s
        while True:
            try:
                await generator.plan()
                break
            except GenerationFailed:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.5)
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
            "replacements": result.replacements, "equals_in_process": expected == result.tokens}


def _first_layer(stages: list[ModelShard]) -> int:
    return stages[-1].layer_range[1] if stages else 0
