"""Generation for the app's "Try the model" page: the engine commands, run on the node's side.

``Generate`` runs where the model is. A node holding every layer itself (a lone node, or one with
a whole copy) samples from its own live stage, one position at a time on the stage's executor
under its lock, so training steps interleave between tokens and nothing is paid: no other
computer takes part. Otherwise the text comes through the network as an inference session
(runtime/inference_client.py) on this node's P2P identity, whose key is also its wallet's: the
holders' quotes are locked at open, the balance is checked before any work, and the payments are
signed by that key on this node's ledger. Each piece of text is published as a ``TextGenerated``
event the moment it decodes; the command's result sums it up (text, tokens, cost, where).

``QuoteGeneration`` asks the same chain for its prices before anything is sent; ``model_state``
(a Query) tells the training step, the loss on held-out text when this node can compute it (it
holds the whole model) and the architecture version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from app.node.events import Event, Generate, QuoteGeneration, TextGenerated
from app.node.model.architecture import ModelArchitecture
from app.node.model.generation import sample_next
from app.node.runtime.inference_client import GenerationFailed, RemoteGenerator
from app.node.runtime.inference_protocol import MAX_STEP_POSITIONS
from app.node.runtime.inference_service import session_forward
from app.node.tokenizer import NeuroTokenizer
from app.node.training.stage import StageWorker
from app.node.training.sync import StageSync

MAX_TOKENS = 1024
"""Most tokens one request may ask for (the architecture's max_seq bounds it further)."""
PLAN_WAIT_S = 5.0
"""How long a request waits for a chain of holders to be found in the network."""


@dataclass(frozen=True)
class NodeView:
    """What the service reads of the running node; functions, because a healing move or a
    vocabulary vote replaces the stage and the architecture while the node runs."""

    architecture: Callable[[], ModelArchitecture]
    tokenizer: Callable[[], NeuroTokenizer]
    stage: Callable[[], StageWorker | None]
    sync: Callable[[], StageSync | None]
    p2p: Callable[[], Any]
    """The node's started P2PNode, or None before it joined."""
    economy: Callable[[], Any]
    """The node's EconomyService (its ledger and key), or None while rewards are off."""
    emit: Callable[[Event], None]


class TextStream:
    """Turns token ids into text pieces as they come: a byte-level token can end inside a UTF-8
    character, so a piece is released only once the text decoded so far no longer ends in an
    unfinished character (the rest follows with the next token)."""

    def __init__(self, tokenizer: NeuroTokenizer) -> None:
        self._tokenizer, self._tokens, self._sent = tokenizer, [], 0

    def add(self, token: int) -> str:
        self._tokens.append(token)
        text = self._tokenizer.decode(self._tokens)
        if text.endswith("\ufffd"):
            return ""
        piece, self._sent = text[self._sent:], len(text)
        return piece

    def text(self) -> str:
        return self._tokenizer.decode(self._tokens)


class GenerationService:
    def __init__(self, view: NodeView) -> None:
        self.view = view

    # ------------------------------------------------------------------ where the model is
    def _whole_stage(self) -> StageWorker | None:
        """This node's stage when it holds every layer with the embedding and the head."""
        stage = self.view.stage()
        if stage is None:
            return None
        arch = stage.shard.architecture
        return stage if stage.layer_range == (0, arch.layers) and stage.is_first and stage.is_last else None

    def _remote(self) -> RemoteGenerator:
        node = self.view.p2p()
        if node is None:
            raise GenerationFailed("the node has not joined a network yet; try again in a moment")
        economy = self.view.economy()
        if economy is None:
            return RemoteGenerator(node, self.view.architecture())
        address, ledger = economy.key.address, economy.ledger
        return RemoteGenerator(node, self.view.architecture(), economics=economy.config,
                               next_seq=lambda: ledger.next_seq(address),
                               keep_payment=lambda raw: ledger.submit(raw, int(time.time() * 1000)))

    # ------------------------------------------------------------------ commands
    async def quote(self, command: QuoteGeneration) -> dict[str, Any]:
        max_tokens = _check_tokens(command.max_tokens)
        if self._whole_stage() is not None:
            return {"where": "this computer", "price_per_token_units": 0, "most_units": 0, "stages": 1}
        generator = self._remote()
        await generator.plan_within(PLAN_WAIT_S)
        prices = await generator.quote(1, max_tokens)
        per_token = sum(price for _layers, price in prices)
        return {"where": "the network", "price_per_token_units": per_token, "most_units": per_token * max_tokens,
                "stages": len(prices)}

    async def generate(self, command: Generate, on_text: Callable[[str], None] | None = None) -> dict[str, Any]:
        """``on_text(piece)`` hears each piece as the event does (the local endpoint streams them)."""
        max_tokens = _check_tokens(command.max_tokens)
        if command.temperature < 0 or not 0 < command.top_p <= 1:
            raise ValueError("the temperature must be 0 or more and top-p between 0 and 1")
        tokenizer = self.view.tokenizer()
        prompt = tokenizer.encode(command.prompt) or [tokenizer.bos_id]
        stream = TextStream(tokenizer)

        def on_token(index: int, token: int) -> None:
            piece = stream.add(token)
            if piece:
                self.view.emit(TextGenerated(request_id=command.request_id, index=index, text=piece))
                if on_text is not None:
                    on_text(piece)

        started = time.monotonic()
        stage = self._whole_stage()
        if stage is not None:
            tokens = await _generate_on(stage, prompt, max_tokens, command.temperature, command.top_p,
                                        tokenizer.eos_id, on_token)
            where, cost, stages = "this computer", 0, 1
        else:
            generator = self._remote()
            await generator.plan_within(PLAN_WAIT_S)
            result = await generator.generate(prompt, max_tokens, temperature=command.temperature,
                                              top_p=command.top_p, eos_id=tokenizer.eos_id, on_token=on_token)
            tokens, where, cost, stages = result.tokens, "the network", result.paid, len(result.holders)
        seconds = time.monotonic() - started
        return {"request_id": command.request_id, "text": stream.text(), "tokens": len(tokens),
                "prompt_tokens": len(prompt), "stopped": bool(tokens) and tokens[-1] == tokenizer.eos_id, "where": where,
                "cost_units": cost, "stages": stages, "tokens_per_s": len(tokens) / seconds if seconds > 0 else 0.0}

    async def model_state(self) -> dict[str, Any]:
        arch, stage = self.view.architecture(), self.view.stage()
        state: dict[str, Any] = {
            "architecture_version": arch.version, "layers": arch.layers, "hidden": arch.hidden,
            "parameters": arch.param_count(), "block_type": arch.block_type,
            "training_step": stage.inner_step if stage is not None else 0,
            "held_out_loss": None, "holds_whole_model": self._whole_stage() is not None,
        }
        sync = self.view.sync()
        if stage is not None and sync is not None and sync.held_out is not None:
            held_out = sync.held_out

            def measure() -> float:
                with stage.lock:  # no optimizer step meanwhile: the loss of one set of weights
                    return float(held_out({n: p.detach() for n, p in stage.shard.named_parameters()}))

            state["held_out_loss"] = await asyncio.get_running_loop().run_in_executor(stage.executor, measure)
        return state


def _check_tokens(max_tokens: int) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
        raise ValueError(f"ask for between 1 and {MAX_TOKENS} tokens")
    return max_tokens


async def _generate_on(stage: StageWorker, prompt: list[int], max_tokens: int, temperature: float, top_p: float,
                       eos_id: int, on_token: Callable[[int, int], None]) -> list[int]:
    """Sampling from this node's own live stage, as ``model.generation.generate`` does, one step
    per executor call (the stage's lock held only while it computes)."""
    shard = stage.shard
    arch = shard.architecture
    if len(prompt) >= arch.max_seq:
        raise ValueError(f"the prompt is {len(prompt)} tokens long; this model reads at most {arch.max_seq - 1}")
    loop = asyncio.get_running_loop()
    cache = shard.new_cache()
    x = torch.tensor([prompt], dtype=torch.long)
    out: list[int] = []
    while len(out) < max_tokens:
        logits = None
        for start in range(0, x.shape[1], MAX_STEP_POSITIONS):
            if stage.shard is not shard:  # a vocabulary vote or a move rebuilt the stage: the cache is void
                raise GenerationFailed("the model changed while it was writing; try again")
            logits = await loop.run_in_executor(stage.executor, session_forward, stage, cache,
                                                x[:, start:start + MAX_STEP_POSITIONS])
        assert logits is not None
        token = sample_next(logits[0, -1], temperature, top_p, None)
        out.append(token)
        on_token(len(out) - 1, token)
        if token == eos_id or len(prompt) + len(out) >= arch.max_seq:
            break
        x = torch.tensor([[token]], dtype=torch.long)
    return out
