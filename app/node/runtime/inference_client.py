"""Generating text through the network: an inference session along a chain of holders.

The client (as Petals' ``InferenceSession``) picks a chain of stages that covers every layer —
holders chosen by the swarm router's weighting and bans, as for training — opens a session on
each, sends the prompt (prefill), samples the next token from the head stage's logits, and sends
one position per token after that. It remembers what it sent to each stage, so when a holder dies
or forgets the session mid-generation, a replica of the same layers is opened and its cache is
rebuilt from that history before the step is repeated there; the stages before it are not
touched, so no token is lost or repeated and the output equals the one an unbroken chain gives.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import torch

from app.crypto.keys import PrivateKey
from app.node.economics.constants import EconomicsConfig
from app.node.economics.pricing import Quote, charge_record
from app.node.model.architecture import ModelArchitecture
from app.node.model.generation import sample_next
from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import P2PError, PeerBusy, PeerRejected
from app.node.p2p.node import P2PNode
from app.node.p2p.protocol import pb2
from app.node.p2p.records import PeerRecord
from app.node.p2p.services import INFERENCE_CLOSE, INFERENCE_OPEN, INFERENCE_STEP
from app.node.runtime.inference_market import QUOTE_TTL_MS
from app.node.runtime.inference_protocol import (
    MAX_STEP_POSITIONS,
    SESSION_ID_BYTES,
    close_request,
    open_request,
    parse_tensor,
    step_request,
)
from app.node.runtime.p2p_transport import heartbeat_fresh

log = logging.getLogger("neuroshard.inference")
MAX_REPLACEMENTS = 8
"""Holders tried per stage and generation before giving up: more replicas than a layer has."""
_REFUSALS_THAT_END = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
                                grpc.StatusCode.UNAUTHENTICATED})
"""A holder refusing our request as malformed or unauthorised: another holder would too."""


class GenerationFailed(RuntimeError):
    """The network could not finish the generation (no chain, or every replica of a stage failed)."""


@dataclass
class _Hop:
    """One stage of the session's chain: its layers, the holder serving it, and what it was sent."""

    layer_range: tuple[int, int]
    holder: PeerRecord
    session_id: bytes
    position: int = 0
    history: list[torch.Tensor] = field(default_factory=list)
    tried: set[bytes] = field(default_factory=set)
    reopened: bool = False
    quote: Quote | None = None  # the price the holder locked for this session (None: free)
    tokens: int = 0  # tokens this session charges: inputs sent to it (a prefill's pieces count once)
    paid_tokens: int = 0  # tokens of this session our accepted payments cover


@dataclass(frozen=True)
class RemoteGeneration:
    tokens: list[int]
    holders: list[list[str]]
    """Node ids that served each stage, in the order they served (a replacement adds one)."""
    replacements: int
    first_token_s: float
    seconds: float
    paid: int = 0
    """micro-NEURO moved by the payments the holders took, token by token (price x tokens, per stage)."""
    prices: tuple[int, ...] = ()
    """The locked price per token of each stage's last holder."""

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0


class RemoteGenerator:
    """Generates through ``node``'s network for the model ``arch``."""

    def __init__(self, node: P2PNode, arch: ModelArchitecture, *, timeout_s: float = 30.0,
                 economics: EconomicsConfig | None = None, next_seq: Callable[[], int] | None = None,
                 keep_payment: Callable[[bytes], None] | None = None) -> None:
        """``economics``: the ledger rules payments are signed under (the node's key pays);
        ``next_seq()``: the sequence number of the payer's next spending record;
        ``keep_payment(record)``: hears every payment as it is signed (the payer's own ledger keeps
        it, so its gossip delivers a payment whose holder died before storing it: sequence numbers
        leave no gap)."""
        self.node, self.arch, self.timeout_s = node, arch, timeout_s
        self.economics, self._next_seq, self._keep_payment = economics, next_seq, keep_payment
        self._seq_used = 0
        self._paid = 0  # micro-NEURO of the payments the holders took in the generation in progress
        self._hops: list[_Hop] = []

    def holders_now(self) -> list[bytes]:
        """Node ids of the chain serving the generation in progress, stage by stage."""
        return [hop.holder.node_id for hop in self._hops]

    # ------------------------------------------------------------------ the chain
    async def _holders(self, layer: int, end: int | None, exclude: set[bytes]) -> list[PeerRecord]:
        """Live holders of the stage starting at ``layer`` (of exactly ``[layer, end)`` when given),
        in the router's weighted order, banned and excluded ones left out."""
        router, interval = self.node.router, self.node.config.heartbeat_interval_s
        found = [r for r in await self.node.who_holds(layer)
                 if r.layer_start == layer and (end is None or r.layer_end == end) and r.layer_end > layer
                 and r.node_id not in exclude and not router.is_banned(r.node_id) and heartbeat_fresh(r, interval)]
        return router.order(found)

    async def plan(self) -> list[PeerRecord]:
        """A chain of holders covering layers 0 .. arch.layers - 1, stage after stage."""
        chain: list[PeerRecord] = []
        layer = 0
        while layer < self.arch.layers:
            holders = await self._holders(layer, None, set())
            if not holders:
                raise GenerationFailed(f"no live node holds the stage starting at layer {layer}")
            chain.append(holders[0])
            layer = holders[0].layer_end
        return chain

    async def plan_within(self, wait_s: float, poll_s: float = 0.3) -> list[PeerRecord]:
        """``plan``, retried while the network is still forming (holders announce themselves a
        little after they start), for at most ``wait_s``; then the last GenerationFailed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            try:
                return await self.plan()
            except GenerationFailed:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(poll_s)

    async def _open(self, hop: _Hop, max_length: int) -> None:
        hop.session_id = secrets.token_bytes(SESSION_ID_BYTES)
        reply = await self.node.call_inference(hop.holder, INFERENCE_OPEN,
                                               open_request(hop.session_id, hop.layer_range, max_length),
                                               self.timeout_s)
        hop.position, hop.tokens, hop.paid_tokens = 0, 0, 0
        hop.quote = None
        if reply.price_per_token:
            hop.quote = Quote(reply.quote_id[:64], reply.provider[:128], int(reply.price_per_token),
                              int(reply.max_tokens), int(time.time() * 1000) + QUOTE_TTL_MS)

    # ------------------------------------------------------------------ one step of one stage
    async def _send(self, hop: _Hop, x: torch.Tensor, last: bool) -> torch.Tensor:
        """Run ``x`` (positions from hop.position) on the hop's holder, in pieces; the output of
        every position (the logits of the last one on the head stage)."""
        outs = []
        for start in range(0, x.shape[1], MAX_STEP_POSITIONS):
            piece = x[:, start:start + MAX_STEP_POSITIONS]
            more = start + MAX_STEP_POSITIONS < x.shape[1]  # a full piece with more of this input to come
            payment, amount = self._payment(hop)  # for the tokens served before this step
            reply = await self.node.call_inference(
                hop.holder, INFERENCE_STEP,
                step_request(hop.session_id, hop.position, piece, more=more, payment=payment), self.timeout_s)
            hop.paid_tokens, self._paid = hop.tokens, self._paid + amount  # served: the payment was taken
            if reply.position != hop.position + piece.shape[1]:
                raise PeerRejected(f"the holder reports position {reply.position}, expected "
                                   f"{hop.position + piece.shape[1]}", grpc.StatusCode.DATA_LOSS)
            hop.position = reply.position
            hop.tokens += 0 if more else 1
            outs.append(self._output(reply, piece.shape[1], last))
        return outs[-1] if last else torch.cat(outs, dim=1)

    def _output(self, reply: pb2.InferenceStepReply, positions: int, last: bool) -> torch.Tensor:
        shape = (1, self.arch.vocab) if last else (1, positions, self.arch.hidden)
        try:
            return parse_tensor(reply.output, reply.data, dtype=torch.float32, shape=shape, what="output")
        except Exception as exc:  # the holder's answer does not parse: not its to give
            raise PeerRejected(f"the holder answered an unusable output: {exc}", grpc.StatusCode.DATA_LOSS) from exc

    async def _run_hop(self, hop: _Hop, x: torch.Tensor, last: bool, max_length: int,
                       holders_seen: list[str]) -> tuple[torch.Tensor, int]:
        """The hop's output for ``x``; on a failed holder, a replica of the same layers is opened,
        its cache rebuilt from the hop's history, and ``x`` run there. Returns (output, replacements)."""
        replaced = 0
        while True:
            try:
                if hop.position == 0 and hop.history:  # a fresh session: rebuild the cache first
                    out = await self._send(hop, torch.cat([*hop.history, x], dim=1), last)
                    out = out if last else out[:, -x.shape[1]:]
                else:
                    out = await self._send(hop, x, last)
                hop.history.append(x)
                return out, replaced
            except P2PError as exc:
                if isinstance(exc, PeerRejected) and exc.code in _REFUSALS_THAT_END:
                    raise GenerationFailed(f"the holder of layers {hop.layer_range} refused the step: {exc}") from exc
                if isinstance(exc, PeerRejected) and exc.code == grpc.StatusCode.NOT_FOUND and not hop.reopened:
                    hop.reopened = True  # the holder is alive but forgot the session (expired): rebuild there
                    try:
                        await self._open(hop, max_length)
                        continue
                    except P2PError:
                        pass
                log.info("holder %s of layers %s failed (%s); replacing it", hop.holder.node_id.hex()[:12],
                         hop.layer_range, exc)
                hop.tried.add(hop.holder.node_id)
                if isinstance(exc, PeerBusy):
                    self.node.router.rest(hop.holder.node_id)  # alive, just not serving now
                else:
                    self.node.router.ban(hop.holder.node_id)
                await self._replace(hop, max_length)
                replaced += 1
                holders_seen.append(hop.holder.node_id.hex())

    async def _replace(self, hop: _Hop, max_length: int) -> None:
        while len(hop.tried) < MAX_REPLACEMENTS:
            candidates = await self._holders(hop.layer_range[0], hop.layer_range[1], hop.tried)
            if not candidates:
                break
            hop.holder = candidates[0]
            try:
                await self._open(hop, max_length)
                return
            except P2PError as exc:
                _end_on_refusal(exc, hop)
                log.info("replica %s could not open a session: %s", hop.holder.node_id.hex()[:12], exc)
                hop.tried.add(hop.holder.node_id)
                self.node.router.ban(hop.holder.node_id)
        raise GenerationFailed(f"no live holder of layers {hop.layer_range} could take over the session")

    # ------------------------------------------------------------------ generation
    async def generate(self, prompt_ids: list[int], max_new_tokens: int, *, temperature: float = 1.0,
                       top_p: float = 1.0, seed: int | None = None, eos_id: int | None = None,
                       on_token: Callable[[int, int], None] | None = None) -> RemoteGeneration:
        """The new token ids, as ``model.generation.generate`` gives them for the same weights and
        arguments; ``on_token(index, token)`` hears each token as soon as it is sampled."""
        arch = self.arch
        if not prompt_ids or any(not 0 <= i < arch.vocab for i in prompt_ids):
            raise ValueError(f"the prompt must be non-empty ids below {arch.vocab}")
        if len(prompt_ids) >= arch.max_seq:
            raise ValueError(f"the prompt ({len(prompt_ids)} tokens) leaves no room in max_seq {arch.max_seq}")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        max_length = min(arch.max_seq, len(prompt_ids) + max_new_tokens)
        self._paid = 0
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        started = time.monotonic()
        hops = [_Hop((r.layer_start, r.layer_end), r, b"") for r in await self.plan()]
        self._hops = hops
        seen: list[list[str]] = [[h.holder.node_id.hex()] for h in hops]
        replacements, first_token_s = 0, 0.0
        out: list[int] = []
        try:
            await self._open_chain(hops, max_length, seen)
            tokens = torch.tensor([prompt_ids], dtype=torch.long)
            while len(out) < max_new_tokens:
                h: torch.Tensor = tokens
                for i, hop in enumerate(hops):
                    h, n = await self._run_hop(hop, h, i == len(hops) - 1, max_length, seen[i])
                    replacements += n
                token = sample_next(h[0], temperature, top_p, generator)
                out.append(token)
                if len(out) == 1:
                    first_token_s = time.monotonic() - started
                if on_token is not None:
                    on_token(len(out) - 1, token)
                if token == eos_id or len(prompt_ids) + len(out) >= max_length:
                    break
                tokens = torch.tensor([[token]], dtype=torch.long)
        finally:
            await self._close_all(hops)
        return RemoteGeneration(out, seen, replacements, first_token_s, time.monotonic() - started, self._paid,
                                tuple(h.quote.price_per_token if h.quote else 0 for h in hops))

    async def _open_chain(self, hops: list[_Hop], max_length: int, seen: list[list[str]]) -> None:
        """A session on every hop, a replica taking the place of a holder that cannot open one."""
        for i, hop in enumerate(hops):
            try:
                await self._open(hop, max_length)
            except P2PError as exc:
                _end_on_refusal(exc, hop)
                hop.tried.add(hop.holder.node_id)
                await self._replace(hop, max_length)
                seen[i] = [hop.holder.node_id.hex()]

    async def quote(self, prompt_tokens: int, max_new_tokens: int) -> list[tuple[tuple[int, int], int]]:
        """(layers, price per token) of each stage of the chain that would serve this now: a session
        is opened on each holder, which locks its quote and checks our balance before any work, and
        closed at once (nothing generated, nothing charged). GenerationFailed with the holder's
        words when one refuses (an insufficient balance names the price)."""
        max_length = min(self.arch.max_seq, prompt_tokens + max_new_tokens)
        hops = [_Hop((r.layer_start, r.layer_end), r, b"") for r in await self.plan()]
        try:
            await self._open_chain(hops, max_length, [[h.holder.node_id.hex()] for h in hops])
        finally:
            await self._close_all(hops)  # nothing was served: nothing is paid
        return [(hop.layer_range, hop.quote.price_per_token if hop.quote else 0) for hop in hops]

    def _payment(self, hop: _Hop) -> tuple[bytes, int]:
        """The signed transfer for the tokens the hop's holder served and we have not paid yet, and
        its amount: (b"", 0) when nothing is due or the holder charges nothing."""
        if hop.quote is None or hop.tokens <= hop.paid_tokens:
            return b"", 0
        if self.economics is None or self._next_seq is None:
            raise GenerationFailed("a holder charges for inference but this client has no ledger to pay from")
        seq = max(self._next_seq(), self._seq_used + 1)
        self._seq_used = seq
        record = charge_record(self.node.key, self.economics, hop.quote, hop.tokens, seq=seq,
                               timestamp_ms=int(time.time() * 1000), paid_before=hop.paid_tokens)
        raw = record.to_bytes()
        if self._keep_payment is not None:
            self._keep_payment(raw)
        return raw, int(record.body["amount"])

    async def _close_all(self, hops: list[_Hop]) -> None:
        for hop in hops:
            if not hop.session_id:
                continue
            try:
                payment, amount = self._payment(hop)  # the last token
                reply = await self.node.call_inference(hop.holder, INFERENCE_CLOSE,
                                                       close_request(hop.session_id, payment),
                                                       min(self.timeout_s, 5.0))
                if reply.closed:
                    self._paid += amount
            except P2PError as exc:  # a dead holder forgets the session; a refused payment is logged
                log.info("closing the session on %s: %s", hop.holder.node_id.hex()[:12], exc)


def _end_on_refusal(exc: P2PError, hop: _Hop) -> None:
    """A refusal another holder would repeat (our balance, our request) ends the generation, saying why."""
    if isinstance(exc, PeerRejected) and exc.code in _REFUSALS_THAT_END:
        raise GenerationFailed(f"the holder of layers {hop.layer_range} refused the session: {exc.reason}") from exc


@dataclass(frozen=True)
class Payer:
    """Who pays for a generation: a wallet key, the ledger rules, its own ledger's next sequence
    number and a place that keeps each signed payment (that ledger)."""

    key: PrivateKey
    economics: EconomicsConfig
    next_seq: Callable[[], int]
    keep_payment: Callable[[bytes], None] | None = None


async def generate_via_trackers(trackers: list[str], arch: ModelArchitecture, prompt_ids: list[int],
                                max_new_tokens: int, *, temperature: float = 1.0, top_p: float = 1.0,
                                seed: int | None = None, eos_id: int | None = None, join_wait_s: float = 10.0,
                                on_token: Callable[[int, int], None] | None = None,
                                config: P2PConfig | None = None, payer: Payer | None = None) -> RemoteGeneration:
    """Join the network through ``trackers`` as a client (``payer``'s key, which pays the holders;
    without one a fresh key, served only by holders that charge nothing), wait up to
    ``join_wait_s`` for a chain covering every layer, generate, leave. GenerationFailed when no
    tracker answers or no chain forms in time."""
    node = P2PNode(payer.key if payer else PrivateKey.generate(), trackers=list(trackers),
                   config=config or P2PConfig(use_upnp=False))
    try:
        await node.start()
        generator = (RemoteGenerator(node, arch, economics=payer.economics, next_seq=payer.next_seq,
                                     keep_payment=payer.keep_payment) if payer else RemoteGenerator(node, arch))
        await generator.plan_within(join_wait_s)
        return await generator.generate(prompt_ids, max_new_tokens, temperature=temperature, top_p=top_p,
                                        seed=seed, eos_id=eos_id, on_token=on_token)
    except (OSError, P2PError) as exc:
        raise GenerationFailed(f"the network could not be reached: {exc}") from exc
    finally:
        await node.stop()
