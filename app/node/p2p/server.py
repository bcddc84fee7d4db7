"""The gRPC edge of a node: one server, every service, uniform handlers and refusals.

Handlers are written once in a transport-neutral shape, ``handler(requests, info) -> responses``
(async iterators of protobuf messages), and served two ways: directly by gRPC (the adapters
below) and through a relay tunnel (relay.py). The adapters apply the per-peer budget, turn a
:class:`RpcRefusal` into its status code with the reason, lower the score of peers that send
garbage or bad signatures, and turn any unexpected exception into INTERNAL: a request can fail,
the node does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from app.node.p2p.budget import StreamBudget
from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import MalformedMessage, RpcRefusal
from app.node.p2p.protocol import METHODS, Method, Shape
from app.node.p2p.ratelimit import PeerGuard
from app.node.p2p.records import InvalidRecord
from app.node.p2p.stats import TrafficStats
from app.node.p2p.wire import counting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallInfo:
    """Who is calling: ``peer`` is the transport address (or ``relay:<id>`` through a tunnel);
    ``budget`` is the node's stream budget, which tensor handlers reserve from."""

    method: Method
    peer: str
    budget: StreamBudget

    @property
    def peer_key(self) -> str:
        return peer_key(self.peer)


Handler = Callable[[AsyncIterator[Any], CallInfo], AsyncIterator[Any]]


def unary(fn: Callable[[Any, CallInfo], Awaitable[Any]]) -> Handler:
    """Wrap ``async fn(request, info) -> response`` into the uniform stream shape."""

    async def handler(requests: AsyncIterator[Any], info: CallInfo) -> AsyncIterator[Any]:
        request = await anext(requests, None)
        if request is None:
            raise RpcRefusal(grpc.StatusCode.INVALID_ARGUMENT, "empty request")
        yield await fn(request, info)

    return handler


def peer_key(peer: str) -> str:
    """Budget key: the IP for remote peers; IP and port on loopback, where every node shares an IP."""
    host, _, _ = peer.rpartition(":")
    if host.endswith(("127.0.0.1", "[::1]", "localhost")) or not host:
        return peer
    return host


class _Undecodable:
    """Stands for a request message that did not parse: grpc would answer UNKNOWN for an
    exception in a deserializer, so the adapters refuse it as INVALID_ARGUMENT instead."""


_UNDECODABLE = _Undecodable()


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # protobuf DecodeError and friends: garbage from the peer
            return _UNDECODABLE

    return parse


def _decoded(message: Any) -> Any:
    if message is _UNDECODABLE:
        raise MalformedMessage("request does not parse as its protobuf message")
    return message


async def _once(message: Any) -> AsyncIterator[Any]:
    yield _decoded(message)


async def _lazy(request_iterator: Any) -> AsyncIterator[Any]:
    """Iterate grpc's request stream only if the handler asks: calling ``__aiter__`` up front
    creates a receiver coroutine that is never awaited when a call is refused early."""
    async for message in request_iterator:
        yield _decoded(message)


class Dispatcher:
    """Holds the handlers of one node and serves them over gRPC or a tunnel."""

    def __init__(self, config: P2PConfig, guard: PeerGuard, stats: TrafficStats) -> None:
        self.config = config
        self.guard = guard
        self.stats = stats
        self.handlers: dict[str, Handler] = {}
        self.budget = StreamBudget(config)

    def register(self, path: str, handler: Handler) -> None:
        if path not in METHODS:
            raise ValueError(f"unknown method {path}")
        self.handlers[path] = handler

    async def dispatch(self, path: str, requests: AsyncIterator[Any], peer: str) -> AsyncIterator[Any]:
        """Run one call; raises RpcRefusal for anything the caller should be told."""
        method = METHODS.get(path)
        handler = self.handlers.get(path)
        if method is None or handler is None:
            raise RpcRefusal(grpc.StatusCode.UNIMPLEMENTED, f"{path} is not served by this node")
        self.guard.admit(peer_key(peer))
        async for response in handler(requests, CallInfo(method, peer, self.budget)):
            yield response

    def refusal(self, exc: BaseException, peer: str, path: str) -> RpcRefusal:
        """Classify a failed call, adjust the peer's score, and return what to answer."""
        if isinstance(exc, InvalidRecord):
            exc = RpcRefusal(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not isinstance(exc, RpcRefusal):
            log.warning("handler %s failed for %s: %r", path, peer, exc)
            return RpcRefusal(grpc.StatusCode.INTERNAL, "internal error while handling the request")
        if exc.code == grpc.StatusCode.UNAUTHENTICATED:
            self.guard.penalise(peer_key(peer), self.config.score_bad_signature)
        elif exc.code == grpc.StatusCode.INVALID_ARGUMENT:
            self.guard.penalise(peer_key(peer), self.config.score_malformed)
        return exc

    # ------------------------------------------------------------------ gRPC adapters
    def _adapter(self, path: str) -> Callable[..., Any]:
        shape = METHODS[path].shape

        async def run(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                      raw: Any = None) -> AsyncIterator[Any]:
            """``raw`` is grpc's own request stream, drained on a refusal (``requests`` may
            already have ended on the message that was refused)."""
            peer = context.peer() or "unknown"
            try:
                async for response in self.dispatch(path, requests, peer):
                    yield response
            except Exception as exc:  # every failure becomes a status, never a crash
                refusal = self.refusal(exc, peer, path)
                # Read what the caller is still streaming before answering: a status sent while
                # its request stream is half-written reaches it as gRPC's own INTERNAL instead of
                # our code and reason (seen under load). Bounded: a refusal never waits long.
                await _drain(requests if raw is None else raw)
                await context.abort(refusal.code, refusal.reason)

        if shape is Shape.UNARY:
            async def unary_adapter(request: Any, context: grpc.aio.ServicerContext) -> Any:
                responses = run(_once(request), context)
                try:
                    response = await anext(responses, None)
                finally:
                    await responses.aclose()
                if response is None:
                    await context.abort(grpc.StatusCode.INTERNAL, "handler returned nothing")
                return response

            return unary_adapter
        if shape is Shape.RESPONSE_STREAM:
            async def stream_adapter(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async for response in self._write_guarded(run(_once(request), context), context):
                    yield response

            return stream_adapter

        async def bidi_adapter(request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for response in self._write_guarded(run(_lazy(request_iterator), context, request_iterator),
                                                      context):
                yield response

        return bidi_adapter

    async def _write_guarded(self, responses: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                             ) -> AsyncIterator[Any]:
        """Pass responses on; a peer that stops reading them is cut off after the stall timeout.

        grpc writes each yielded message from the handler's own task before asking for the next,
        so while a yield is pending, grpc is blocked on the peer's flow-control window. If that
        lasts ``stream_stall_timeout_s`` the handler task is cancelled, which ends the handler: the
        handler's reservations and buffers are released. (grpc sends the peer no status then: its
        HTTP/2 stream lasts until its deadline or the connection closes, at most
        MAX_STREAMS_PER_CONNECTION per connection.)"""
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None

        def cut_off() -> None:
            log.info("peer %s stopped reading its answer for %g s: call ended", context.peer(),
                     self.config.stream_stall_timeout_s)
            task.cancel()

        async for response in responses:
            timer = loop.call_later(self.config.stream_stall_timeout_s, cut_off)
            try:
                yield response
            finally:
                timer.cancel()

    def build_server(self) -> grpc.aio.Server:
        """A grpc.aio server for every registered method. Methods are registered by path with
        our codecs (wire.py: byte counting, copy-free data chunks); the messages are the
        generated ones, so the wire format is exactly the .proto's."""
        options = [
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # HTTP/2 streams per connection: a call cut off for not reading its answer leaves its
            # stream to the peer's deadline or the connection's end; this bounds how many
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        ]
        server = grpc.aio.server(options=options)
        services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for path in self.handlers:
            method = METHODS[path]
            serializer, deserializer = counting(method, self.stats, server=True)
            factory = _HANDLER_FACTORIES[method.shape]
            services.setdefault(method.service, {})[method.name] = factory(
                self._adapter(path), request_deserializer=_tolerant(deserializer), response_serializer=serializer)
        server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler(f"neuroshard.v1.{service}", handlers)
            for service, handlers in services.items()])
        return server


_HANDLER_FACTORIES = {
    Shape.UNARY: grpc.unary_unary_rpc_method_handler,
    Shape.RESPONSE_STREAM: grpc.unary_stream_rpc_method_handler,
    Shape.BIDI: grpc.stream_stream_rpc_method_handler,
}


MAX_STREAMS_PER_CONNECTION = 256
DRAIN_TIMEOUT_S = 1.0
DRAIN_MAX_MESSAGES = 256  # the codec's 1 MiB chunks: a refused 256 MiB upload is not read to the end


async def _drain(requests: AsyncIterator[Any]) -> None:
    """Consume the rest of a refused call's request stream, within DRAIN_TIMEOUT_S and
    DRAIN_MAX_MESSAGES; a stream that ends badly or slowly is simply left."""

    async def consume() -> None:
        count = 0
        async for _ in requests:
            count += 1
            if count >= DRAIN_MAX_MESSAGES:
                return

    with contextlib.suppress(asyncio.TimeoutError, grpc.RpcError, StopAsyncIteration, RuntimeError, ValueError):
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            await consume()
