"""Tensor-carrying calls (pipeline stages, pseudo-gradient sync, weights download).

Request: a signed :class:`StreamHeader` (kind, JSON meta, tensor specs) then the ~1 MiB data
chunks; through a relay, also a signed trailer with the payload's digest (tensor_codec.py says
why only there). While it receives and computes, the server sends a ``keepalive`` chunk every
``stage_keepalive_s``, so a caller can tell a slow stage from a dead or hung one: a gap longer
than its failover timeout means silence (the swarm router then asks a replica). The answer is an
unsigned header plus data chunks on the same stream: the caller chose whom it dialled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
import torch

from app.crypto.keys import PrivateKey, verify
from app.node.p2p.auth import ReplayGuard, sign_message, verify_message
from app.node.p2p.bandwidth import Bandwidth
from app.node.p2p.client import PeerClient, Route
from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import MalformedMessage, PeerRejected, RequestTimeout, RpcRefusal
from app.node.p2p.protocol import is_compatible, pb2
from app.node.p2p.records import PeerRecord
from app.node.p2p.server import CallInfo, Handler
from app.node.p2p.tensor_codec import (
    Limits,
    StreamReader,
    build_header,
    check_header,
    data_chunks,
    trailer_bytes,
)

TensorHandler = Callable[[bytes, str, dict[str, Any], dict[str, torch.Tensor]],
                         Awaitable[tuple[dict[str, Any], dict[str, torch.Tensor]]]]
"""``(caller, kind, meta, tensors) -> (meta, tensors)``; ``caller`` is the node id the request's
signature verified, the only identity a handler may trust."""
_OFFLOAD_BYTES = 1 << 20
"""Encoding (a copy for CPU/GPU tensors) of more than 1 MiB runs in a thread so the loop keeps answering."""


def limits_of(config: P2PConfig) -> Limits:
    return Limits(config.max_tensor_elements, config.max_stream_bytes, config.max_meta_bytes)


_SNAPSHOT_KINDS = frozenset({"sync", "weights"})
"""Streams of live state (weights, DiLoCo deltas) are copied before sending: their tensors may be
updated by training while the chunks leave. Activations and gradients are fresh per micro-batch."""


async def _encode(kind: str, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
                  snapshot: bool = False) -> tuple[Any, list]:
    """Header without payload digest (TLS protects direct streams) and the raw buffers."""
    if sum(t.numel() * t.element_size() for t in tensors.values()) > _OFFLOAD_BYTES:
        return await asyncio.to_thread(build_header, kind, meta, tensors, "", False, snapshot)
    return build_header(kind, meta, tensors, digest=False, snapshot=snapshot)


def _hash_all(buffers: list[memoryview]) -> bytes:
    hasher = hashlib.sha256()
    for buf in buffers:
        hasher.update(buf)
    return hasher.digest()


def _check_trailer(header: Any, reader: StreamReader) -> None:
    """A relayed request's payload must match the digest its signer put in the trailer."""
    trailer = reader.trailer
    if trailer is None:
        if header.payload_sha256:
            return  # checked by the reader against the signed header
        raise MalformedMessage("a relayed tensor stream must end with its signed trailer")
    if trailer.payload_sha256 != reader.digest():
        raise MalformedMessage("payload does not match the digest in its trailer")
    if not verify(header.auth.public_key, trailer_bytes(header.auth.signature, trailer.payload_sha256),
                  trailer.signature):
        raise RpcRefusal(grpc.StatusCode.UNAUTHENTICATED, "trailer is not signed by the header's signer")


async def _beating(work: Awaitable[Any], interval: float) -> AsyncIterator[Any]:
    """Yield keepalive chunks until ``work`` finishes, then yield its result wrapped in a tuple."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                yield (task.result(),)
                return
            yield pb2.TensorChunk(keepalive=True)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def tensor_handler(path: str, get_handler: Callable[[], TensorHandler | None], replay: ReplayGuard,
                   config: P2PConfig, allowed_kinds: frozenset[str], bandwidth: Bandwidth | None = None) -> Handler:
    """Server side of one tensor method; ``get_handler`` returns the training callback (or None).
    ``bandwidth`` paces the chunks read and sent (the volunteer's caps); keepalives keep flowing
    while a capped answer waits, so the caller reads a slow link as slow, not as a dead peer."""
    limits = limits_of(config)

    async def handler(requests: AsyncIterator[Any], info: CallInfo) -> AsyncIterator[Any]:
        first = await anext(requests, None)
        if first is None or first.WhichOneof("part") != "header":
            raise MalformedMessage("a tensor stream must start with its header")
        header = first.header
        if not is_compatible(header.protocol_version):
            raise RpcRefusal(grpc.StatusCode.FAILED_PRECONDITION,
                             f"protocol version {header.protocol_version} is not supported; update NeuroShard")
        caller = verify_message(path, header, replay).node_id
        if header.kind not in allowed_kinds:
            raise MalformedMessage(f"kind {header.kind[:32]!r} is not valid for {path}")
        callback = get_handler()
        if callback is None:
            raise RpcRefusal(grpc.StatusCode.UNIMPLEMENTED, f"this node does not serve {path} yet")
        check_header(header, limits)  # declared sizes, before anything is reserved or buffered
        relayed = info.peer.startswith("relay:")  # the relay saw the data in the clear
        with info.budget.hold(info.peer_key, header.total_bytes):
            async for item in _serve(caller, header, requests, callback, config, limits, bandwidth, relayed):
                yield item

    return handler


async def _next_chunk(requests: AsyncIterator[Any], stall_s: float) -> Any:
    """The next request chunk (None at the end); a peer silent for ``stall_s`` is refused."""
    try:
        async with asyncio.timeout(stall_s):
            return await anext(requests, None)
    except asyncio.TimeoutError:
        raise RpcRefusal(grpc.StatusCode.DEADLINE_EXCEEDED,
                         f"tensor stream stalled: no data for {stall_s:g} s") from None


async def _serve(caller: bytes, header: Any, requests: AsyncIterator[Any], callback: TensorHandler,
                 config: P2PConfig, limits: Limits, bandwidth: Bandwidth | None,
                 relayed: bool) -> AsyncIterator[Any]:
    """Receive the payload, run the callback, send the answer (inside the stream's reservation)."""
    reader = StreamReader(header, limits, hash_payload=relayed)
    yield pb2.TensorChunk(keepalive=True)  # accepted: the caller's silence clock restarts

    async def receive() -> dict[str, torch.Tensor]:
        while (chunk := await _next_chunk(requests, config.stream_stall_timeout_s)) is not None:
            reader.add(chunk)
            if bandwidth is not None:
                await bandwidth.download.take(_wire_size(chunk))  # reading slower makes gRPC slow the sender
        if relayed:
            await reader.settled()
            _check_trailer(header, reader)
        elif reader.trailer is not None:
            raise MalformedMessage("a trailer on a direct stream (only relayed streams carry one)")
        return reader.finish()

    tensors: dict[str, torch.Tensor] = {}
    async for item in _beating(receive(), config.stage_keepalive_s):
        if isinstance(item, tuple):
            tensors = item[0]
        else:
            yield item
    result: tuple[dict[str, Any], dict[str, torch.Tensor]] = ({}, {})
    async for item in _beating(callback(caller, header.kind, reader.meta, tensors), config.stage_keepalive_s):
        if isinstance(item, tuple):
            result = item[0]
        else:
            yield item
    out_meta, out_tensors = result
    out_header, buffers = await _encode("result", out_meta, out_tensors, header.kind in _SNAPSHOT_KINDS)
    yield pb2.TensorChunk(header=out_header)
    for chunk in data_chunks(buffers, config.chunk_bytes):
        if bandwidth is not None and bandwidth.upload.reserve(len(chunk)) > 0:
            # Over the upload cap: wait out the debt, beating meanwhile so the caller reads a
            # slow link as slow rather than as a dead peer (and does not fail over).
            async for beat in _beating(bandwidth.upload.take(0), config.stage_keepalive_s):
                if not isinstance(beat, tuple):
                    yield beat
        yield chunk


def _wire_size(chunk: Any) -> int:
    """Bytes a received chunk carried (its payload; headers and keepalives are a few bytes)."""
    return len(chunk.data) if chunk.WhichOneof("part") == "data" else 0


async def _read_answer(stream: AsyncIterator[Any], config: P2PConfig, deadline: float, timeout: float,
                       on_silence: Callable[[], None] | None, bandwidth: Bandwidth | None = None,
                       ) -> StreamReader | None:
    """Read keepalives, then the answer's header and chunks; report a silence once."""
    reader: StreamReader | None = None
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(stream, None))
            wait = deadline - time.monotonic()
            if on_silence is not None:
                wait = min(wait, config.failover_timeout_s)
            done, _ = await asyncio.wait({pending}, timeout=max(wait, 0.001))
            if not done:  # keep the same pending read: cancelling it would end the stream
                if time.monotonic() >= deadline:
                    raise RequestTimeout(f"stage call did not finish within {timeout:.1f} s")
                on_silence, report = None, on_silence
                report()  # type: ignore[misc]
                continue
            chunk, pending = pending.result(), None
            if chunk is None:
                return reader
            part = chunk.WhichOneof("part")
            if part == "keepalive":
                continue
            if reader is None:
                if part != "header":
                    raise PeerRejected("peer answered without a header", grpc.StatusCode.DATA_LOSS)
                reader = StreamReader(chunk.header, limits_of(config))
            else:
                reader.add(chunk)
                if bandwidth is not None:
                    await bandwidth.download.take(_wire_size(chunk))  # reading slower makes gRPC slow the sender
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


async def call_tensors(client: PeerClient, key: PrivateKey, peer: PeerRecord | str | Route, path: str, kind: str,
                       meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], timeout: float,
                       config: P2PConfig, on_silence: Callable[[], None] | None = None,
                       bandwidth: Bandwidth | None = None, *, recipient: bytes
                       ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Send a tensor stream signed for the node ``recipient`` and read the answer. ``on_silence`` is called (once) when no
    chunk arrived for ``config.failover_timeout_s``; the call itself keeps waiting until
    ``timeout`` so a hedging caller can take whichever answer comes first. ``bandwidth`` paces
    the chunks sent and read (the volunteer's caps)."""
    header, buffers = await _encode(kind, meta, tensors, kind in _SNAPSHOT_KINDS)
    sign_message(key, path, header, recipient)

    def requests() -> Any:
        yield pb2.TensorChunk(header=header)
        yield from data_chunks(buffers, config.chunk_bytes)

    async def relayed_requests() -> AsyncIterator[Any]:
        # the digest is computed in a worker while the chunks leave, then signed in the trailer
        digest = asyncio.ensure_future(asyncio.to_thread(_hash_all, buffers))
        try:
            yield pb2.TensorChunk(header=header)
            for chunk in data_chunks(buffers, config.chunk_bytes):
                if bandwidth is not None:
                    await bandwidth.upload.take(len(chunk))
                yield chunk
            payload_sha256 = await digest
        finally:
            digest.cancel()
        signature = key.sign(trailer_bytes(header.auth.signature, payload_sha256))
        yield pb2.TensorChunk(trailer=pb2.StreamTrailer(payload_sha256=payload_sha256, signature=signature))

    async def paced_requests() -> AsyncIterator[Any]:
        assert bandwidth is not None
        yield pb2.TensorChunk(header=header)
        for chunk in data_chunks(buffers, config.chunk_bytes):
            await bandwidth.upload.take(len(chunk))  # waits only while in debt
            yield chunk

    # Uncapped streams keep the plain generator: gRPC writes it out without yielding to the loop
    # between chunks, so a peer's early refusal arrives as its status, not as a failed write.
    capped = bandwidth is not None and bandwidth.upload.rate is not None
    route = client.route(peer)  # a hole-punched path is direct: no trailer then
    if route.target:
        outgoing: Any = relayed_requests()
    else:
        outgoing = paced_requests() if capped else requests()
    stream = client.stream(route, path, outgoing, timeout)
    try:
        reader = await _read_answer(stream, config, time.monotonic() + timeout, timeout, on_silence, bandwidth)
    except MalformedMessage as exc:
        raise PeerRejected(f"peer sent a malformed answer: {exc.reason}", grpc.StatusCode.DATA_LOSS) from None
    finally:
        await stream.aclose()
    if reader is None:
        raise PeerRejected("peer closed the stream without an answer", grpc.StatusCode.DATA_LOSS)
    try:
        return reader.meta, reader.finish()
    except MalformedMessage as exc:
        raise PeerRejected(f"peer sent a malformed answer: {exc.reason}", grpc.StatusCode.DATA_LOSS) from None
