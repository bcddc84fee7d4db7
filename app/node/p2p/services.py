"""The handlers training registers (stage, sync, weights, gossip, data) and their client calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import torch

from app.node.p2p.auth import ReplayGuard, sign_message, verify_message
from app.node.p2p.bandwidth import Bandwidth
from app.node.p2p.client import PeerClient, Route
from app.node.p2p.config import P2PConfig
from app.node.p2p.dht_service import check_version
from app.node.p2p.errors import MalformedMessage, PeerRejected, RpcRefusal
from app.node.p2p.protocol import PROTOCOL_VERSION, STAGE_PROTOCOL_VERSION, pb2
from app.node.p2p.server import CallInfo, Dispatcher, unary
from app.node.p2p.tensor_rpc import tensor_handler

FORWARD, BACKWARD = "/neuroshard.v1.Pipeline/Forward", "/neuroshard.v1.Pipeline/Backward"
COMMIT, FINISH = "/neuroshard.v1.Pipeline/Commit", "/neuroshard.v1.Pipeline/Finish"
EXCHANGE, WEIGHTS = "/neuroshard.v1.Sync/Exchange", "/neuroshard.v1.Sync/Weights"
GOSSIP, SHARD = "/neuroshard.v1.Ledger/Gossip", "/neuroshard.v1.Data/Shard"
INFERENCE_OPEN, INFERENCE_STEP = "/neuroshard.v1.Inference/Open", "/neuroshard.v1.Inference/Step"
INFERENCE_CLOSE = "/neuroshard.v1.Inference/Close"
INFERENCE_METHODS = (INFERENCE_OPEN, INFERENCE_STEP, INFERENCE_CLOSE)
VERIFY_STEP = "/neuroshard.v1.Pipeline/VerifyStep"
PROOF_ID_BYTES = 32
MAX_VERIFY_STEP = 10**6
"""Steps one proof may commit to (the challenge record's own bound on its step)."""
MAX_VERIFY_HEADER = 64 * 2**20 // 16
"""The header carries 32 bytes (64 hex digits) per leaf and a few scalars: 4 MiB is ~60k steps."""
MAX_TOPIC = 64
MAX_SHARD_ID = 256
MAX_SHARD_BYTES = 1 << 30
"""A genesis shard is tens of MiB; a GiB cap stops a peer from streaming without end."""


@dataclass
class Handlers:
    """Callbacks registered by training and economics; None means "not served yet"."""

    stage: Callable[..., Awaitable[tuple[dict[str, Any], dict[str, torch.Tensor]]]] | None = None
    sync: Callable[..., Awaitable[tuple[dict[str, Any], dict[str, torch.Tensor]]]] | None = None
    weights: Callable[[bytes, dict[str, Any]], Awaitable[dict[str, torch.Tensor]]] | None = None
    """Each tensor handler is called with the caller's verified node id first (tensor_rpc.py)."""
    gossip: dict[str, Callable[[bytes, list[bytes]], Awaitable[list[bytes]]]] = field(default_factory=dict)
    data: Callable[[str], Awaitable[bytes | None]] | None = None
    inference: Callable[[str, bytes, Any], Awaitable[Any]] | None = None
    """Inference sessions: ``(method path, verified caller's public key, request) -> reply``
    (runtime/inference_service.py)."""
    verify: Callable[[bytes, str, int | None], Awaitable[tuple[bytes, bytes] | None]] | None = None
    """Verification requests: ``(verified caller's public key, proof id hex, step or None for the
    leaves only) -> (header, blob)``, or None when no such proof is held (runtime/verification.py)."""


def install(dispatcher: Dispatcher, handlers: Handlers, replay: ReplayGuard, config: P2PConfig,
            bandwidth: Bandwidth | None = None) -> None:
    def stage() -> Any:
        return handlers.stage

    def sync() -> Any:
        if handlers.sync is None:
            return None
        fn = handlers.sync
        return lambda caller, kind, meta, tensors: fn(caller, meta, tensors)

    def weights() -> Any:
        if handlers.weights is None:
            return None
        fn = handlers.weights

        async def run(caller: bytes, kind: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Any:
            return pb2.WeightsReply(status=pb2.STAGE_OK), await fn(caller, meta)

        return run

    dispatcher.register(FORWARD, tensor_handler(FORWARD, stage, replay, config, frozenset({"forward"}), bandwidth))
    dispatcher.register(BACKWARD, tensor_handler(BACKWARD, stage, replay, config, frozenset({"backward"}), bandwidth))
    dispatcher.register(EXCHANGE, tensor_handler(EXCHANGE, sync, replay, config, frozenset({"sync"}), bandwidth))
    dispatcher.register(WEIGHTS, tensor_handler(WEIGHTS, weights, replay, config, frozenset({"weights"}), bandwidth))
    dispatcher.register(COMMIT, unary(_stage_control(COMMIT, "commit", handlers, replay)))
    dispatcher.register(FINISH, unary(_stage_control(FINISH, "finish", handlers, replay)))
    dispatcher.register(GOSSIP, unary(_gossip_handler(handlers, replay, config)))
    dispatcher.register(SHARD, _shard_handler(handlers, config, bandwidth))
    for path in INFERENCE_METHODS:
        dispatcher.register(path, unary(_inference_handler(path, handlers, replay)))
    dispatcher.register(VERIFY_STEP, _verify_handler(handlers, replay, config, bandwidth))


def check_verify_request(request: Any) -> tuple[str, int | None]:
    """The proof id (hex) and step (None: leaves only) of a VerifyStep request, or a refusal with
    the specific status (neuroshard.proto)."""
    if request.stage_version != STAGE_PROTOCOL_VERSION:
        raise RpcRefusal(grpc.StatusCode.FAILED_PRECONDITION,
                         f"stage protocol version {request.stage_version} is not supported: this node speaks "
                         f"version {STAGE_PROTOCOL_VERSION}")
    if len(request.proof_id) != PROOF_ID_BYTES:
        raise RpcRefusal(grpc.StatusCode.INVALID_ARGUMENT,
                         f"proof_id must be {PROOF_ID_BYTES} bytes, got {len(request.proof_id)}")
    if request.leaves_only and request.step:
        raise RpcRefusal(grpc.StatusCode.INVALID_ARGUMENT, "leaves_only asks for no step: step must be 0")
    if request.step > MAX_VERIFY_STEP:
        raise RpcRefusal(grpc.StatusCode.INVALID_ARGUMENT,
                         f"step = {request.step} is out of range [0, {MAX_VERIFY_STEP}]")
    return bytes(request.proof_id).hex(), (None if request.leaves_only else int(request.step))


def _verify_handler(handlers: Handlers, replay: ReplayGuard, config: P2PConfig,
                    bandwidth: Bandwidth | None = None) -> Callable[..., AsyncIterator[Any]]:
    async def verify_step(requests: AsyncIterator[Any], info: CallInfo) -> AsyncIterator[Any]:
        request = await anext(requests, None)
        if request is None:
            raise MalformedMessage("empty request")
        caller = verify_message(VERIFY_STEP, request, replay).public_key
        proof_id, step = check_verify_request(request)
        if handlers.verify is None:
            raise RpcRefusal(grpc.StatusCode.UNIMPLEMENTED, "this node keeps no committed training steps")
        served = await handlers.verify(caller, proof_id, step)
        if served is None:
            raise RpcRefusal(grpc.StatusCode.NOT_FOUND,
                             f"no committed step {step} of proof {proof_id[:16]} is held here (window closed?)")
        header, blob = served
        yield pb2.VerifyStepChunk(header=header)
        view = memoryview(blob)
        for offset in range(0, len(view), config.chunk_bytes):
            part = bytes(view[offset:offset + config.chunk_bytes])
            if bandwidth is not None:
                await bandwidth.upload.take(len(part))  # the volunteer's upload cap covers samples too
            yield pb2.VerifyStepChunk(data=part)

    return verify_step


async def call_verify_step(client: PeerClient, key: Any, route: Route, proof_id: str, step: int | None,
                           timeout: float, *, recipient: bytes, max_bytes: int,
                           bandwidth: Bandwidth | None = None) -> tuple[bytes, bytes]:
    """Asks a prover for committed step ``step`` of ``proof_id`` (None: the leaves only), signed for
    ``recipient``; returns (header, blob). Refuses a reply larger than ``max_bytes`` unread past it."""
    request = pb2.VerifyStepRequest(stage_version=STAGE_PROTOCOL_VERSION, proof_id=bytes.fromhex(proof_id),
                                    step=step or 0, leaves_only=step is None)
    sign_message(key, VERIFY_STEP, request, recipient)
    header, parts, size = b"", [], 0
    async for chunk in client.stream(route, VERIFY_STEP, [request], timeout):
        if not header:
            header = chunk.header
            if not header or len(header) > MAX_VERIFY_HEADER:
                raise PeerRejected("verification reply without a header or with one too large",
                                   grpc.StatusCode.RESOURCE_EXHAUSTED)
            continue
        size += len(chunk.data)
        if size > max_bytes:
            raise PeerRejected("verification sample exceeds the size limit", grpc.StatusCode.RESOURCE_EXHAUSTED)
        parts.append(chunk.data)
        if bandwidth is not None:
            await bandwidth.download.take(len(chunk.data))
    return header, b"".join(parts)


def _inference_handler(path: str, handlers: Handlers, replay: ReplayGuard) -> Callable[..., Any]:
    """Inference session calls: signed unary requests; the handler is given the verified caller's
    public key (its ledger address pays for the session)."""

    async def call(request: Any, info: CallInfo) -> Any:
        caller = verify_message(path, request, replay).public_key
        if handlers.inference is None:
            raise RpcRefusal(grpc.StatusCode.UNIMPLEMENTED, "this node serves no inference sessions")
        return await handlers.inference(path, caller, request)

    return call


async def call_signed(client: PeerClient, key: Any, route: Route, path: str, request: Any, timeout: float,
                      *, recipient: bytes) -> Any:
    """Sign ``request`` for ``recipient`` and send it as a unary call; returns the typed reply."""
    sign_message(key, path, request, recipient)
    return await client.unary(route, path, request, timeout)


def _stage_control(path: str, kind: str, handlers: Handlers, replay: ReplayGuard) -> Callable[..., Any]:
    """Commit and Finish: small signed unary calls answered by the same stage handler as the
    tensor calls, as ``handler(caller, kind, request, {}) -> (reply, {})``."""

    async def control(request: Any, info: CallInfo) -> Any:
        caller = verify_message(path, request, replay).node_id
        if handlers.stage is None:
            raise RpcRefusal(grpc.StatusCode.UNIMPLEMENTED, f"this node does not serve {path} yet")
        reply, _ = await handlers.stage(caller, kind, request, {})
        return reply

    return control


def _gossip_handler(handlers: Handlers, replay: ReplayGuard, config: P2PConfig) -> Callable[..., Any]:
    async def gossip(request: Any, info: CallInfo) -> Any:
        check_version(request)
        verified = verify_message(GOSSIP, request, replay)
        if len(request.payloads) > config.max_gossip_payloads or \
                sum(len(p) for p in request.payloads) > config.max_gossip_bytes:
            raise RpcRefusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "gossip batch too large; send fewer records")
        fn = handlers.gossip.get(request.topic[:MAX_TOPIC])
        if fn is None:
            raise RpcRefusal(grpc.StatusCode.UNIMPLEMENTED, f"no gossip topic {request.topic[:MAX_TOPIC]!r} here")
        answer = await fn(verified.node_id, list(request.payloads))
        return pb2.GossipResponse(protocol_version=PROTOCOL_VERSION, payloads=answer)

    return gossip


def _shard_handler(handlers: Handlers, config: P2PConfig,
                   bandwidth: Bandwidth | None = None) -> Callable[..., AsyncIterator[Any]]:
    async def shard(requests: AsyncIterator[Any], info: CallInfo) -> AsyncIterator[Any]:
        request = await anext(requests, None)
        if request is None:
            raise MalformedMessage("empty request")
        check_version(request)
        if not request.shard_id or len(request.shard_id) > MAX_SHARD_ID:
            raise MalformedMessage("shard id is empty or too long")
        if handlers.data is None:
            raise RpcRefusal(grpc.StatusCode.UNIMPLEMENTED, "this node serves no data shards")
        data = await handlers.data(request.shard_id)
        if data is None:
            yield pb2.ShardChunk(found=False)
            return
        view = memoryview(data)
        for offset in range(0, max(len(view), 1), config.chunk_bytes):
            part = bytes(view[offset:offset + config.chunk_bytes])
            if bandwidth is not None:
                await bandwidth.upload.take(len(part))  # the volunteer's upload cap covers data served too
            yield pb2.ShardChunk(found=True, data=part)

    return shard


async def call_gossip(client: PeerClient, key: Any, route: Route, topic: str, payloads: list[bytes],
                      timeout: float, *, recipient: bytes) -> list[bytes]:
    request = pb2.GossipRequest(protocol_version=PROTOCOL_VERSION, topic=topic, payloads=payloads)
    sign_message(key, GOSSIP, request, recipient)
    return list((await client.unary(route, GOSSIP, request, timeout)).payloads)


async def call_data(client: PeerClient, route: Route, shard_id: str, timeout: float, config: P2PConfig,
                    bandwidth: Bandwidth | None = None) -> bytes | None:
    parts: list[bytes] = []
    size = 0
    request = pb2.ShardRequest(protocol_version=PROTOCOL_VERSION, shard_id=shard_id)
    async for chunk in client.stream(route, SHARD, [request], timeout):
        if not chunk.found:
            return None
        size += len(chunk.data)
        if size > MAX_SHARD_BYTES:
            raise PeerRejected("data shard exceeds the size limit", grpc.StatusCode.RESOURCE_EXHAUSTED)
        parts.append(chunk.data)
        if bandwidth is not None:
            await bandwidth.download.take(len(chunk.data))
    return b"".join(parts)
