"""Outgoing calls: a channel per peer, deadlines on every call, typed errors, relayed delivery.

A peer is dialled at its address; a hidden node (no address) is reached through its relay with
``Relay.Forward`` naming it as target, each message passed through as serialised bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import P2PError, PeerRejected, PeerUnavailable, RequestTimeout, error_from_status
from app.node.p2p.protocol import METHODS, PROTOCOL_VERSION, Method, Shape, pb2
from app.node.p2p.records import PeerRecord
from app.node.p2p.stats import TrafficStats
from app.node.p2p.wire import counting, parser, serialize

_RELAY_FORWARD = "/neuroshard.v1.Relay/Forward"
MAX_CHANNELS = 256
"""Open channels kept per node (one TCP connection each); the least recently used is closed
beyond this, so a long-lived node in a big swarm does not run out of file descriptors."""


@dataclass(frozen=True)
class Route:
    """Where a call goes: ``dial`` is the address to connect to; ``target`` is set when ``dial``
    is a relay passing the call to the hidden node with that id."""

    dial: str
    target: bytes = b""

    @classmethod
    def of(cls, peer: PeerRecord | str | Route) -> Route:
        if isinstance(peer, Route):
            return peer
        if isinstance(peer, str):
            return cls(peer)
        if peer.address:
            return cls(peer.address)
        if peer.relay:
            return cls(peer.relay, peer.node_id)
        raise PeerUnavailable("peer record has neither an address nor a relay")


async def _aiter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class PeerClient:
    def __init__(self, config: P2PConfig, stats: TrafficStats) -> None:
        self.config = config
        self.stats = stats
        self._channels: OrderedDict[str, grpc.aio.Channel] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is not None:
            self._channels.move_to_end(address)
        else:
            channel = grpc.aio.insecure_channel(address, options=[
                ("grpc.max_send_message_length", self.config.max_message_bytes),
                ("grpc.max_receive_message_length", self.config.max_message_bytes),
                ("grpc.enable_retries", 0),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ])
            self._channels[address] = channel
            if len(self._channels) > MAX_CHANNELS:
                _, oldest = self._channels.popitem(last=False)
                task = asyncio.ensure_future(oldest.close(grace=1.0))  # lets its calls in flight end
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        return channel

    async def forget(self, address: str) -> None:
        channel = self._channels.pop(address, None)
        if channel is not None:
            await channel.close(grace=None)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), OrderedDict()
        for channel in channels:
            with contextlib.suppress(Exception):
                await channel.close(grace=None)

    async def unary(self, peer: PeerRecord | str | Route, path: str, request: Any, timeout: float) -> Any:
        responses = self.stream(peer, path, [request], timeout)
        try:
            response = await anext(responses, None)
        finally:
            await responses.aclose()
        if response is None:
            raise PeerRejected(f"{path} returned no response")
        return response

    async def stream(self, peer: PeerRecord | str | Route, path: str,
                     requests: Iterable[Any] | AsyncIterable[Any], timeout: float) -> AsyncIterator[Any]:
        """Responses of one call, any shape; every gRPC failure becomes a typed P2PError."""
        route = Route.of(peer)
        method = METHODS[path]
        try:
            if route.target:
                source = self._relayed(route, method, requests, timeout)
            else:
                source = self._direct(route.dial, method, requests, timeout)
            async for response in source:
                yield response
        except grpc.aio.AioRpcError as exc:
            raise error_from_status(exc.code(), exc.details(), route.dial) from None
        except (asyncio.TimeoutError, TimeoutError):
            raise RequestTimeout(f"{route.dial} did not answer within {timeout:.2f} s") from None
        except P2PError:
            raise
        except Exception as exc:  # grpc's own errors outside AioRpcError (a call torn down mid-write)
            raise PeerUnavailable(f"{route.dial}: call failed: {exc!r}") from None

    async def _direct(self, address: str, method: Method, requests: Iterable[Any] | AsyncIterable[Any],
                      timeout: float) -> AsyncIterator[Any]:
        channel = self.channel(address)
        ser, de = counting(method, self.stats, server=False)
        if method.shape is Shape.BIDI:
            call = channel.stream_stream(method.path, request_serializer=ser, response_deserializer=de)(
                _aiter(requests), timeout=timeout)
            async for response in call:
                yield response
            return
        request = await anext(_aiter(requests))
        if method.shape is Shape.UNARY:
            yield await channel.unary_unary(method.path, request_serializer=ser, response_deserializer=de)(
                request, timeout=timeout)
            return
        call = channel.unary_stream(method.path, request_serializer=ser, response_deserializer=de)(
            request, timeout=timeout)
        async for response in call:
            yield response

    async def _relayed(self, route: Route, method: Method, requests: Iterable[Any] | AsyncIterable[Any],
                       timeout: float) -> AsyncIterator[Any]:
        kind, parse = method.traffic, parser(method.response)

        async def frames() -> AsyncIterator[Any]:
            yield pb2.RelayFrame(protocol_version=PROTOCOL_VERSION, target=route.target, method=method.path)
            async for request in _aiter(requests):
                raw = serialize(request)
                self.stats.add_sent(kind, len(raw))
                yield pb2.RelayFrame(message=raw)
            yield pb2.RelayFrame(end=True)

        relay = METHODS[_RELAY_FORWARD]
        call = self.channel(route.dial).stream_stream(
            relay.path, request_serializer=relay.request.SerializeToString,
            response_deserializer=relay.response.FromString)(frames(), timeout=timeout)
        async for frame in call:
            if frame.end:
                break
            raw = frame.message
            self.stats.add_received(kind, len(raw))
            try:
                yield parse(raw)
            except Exception:  # protobuf DecodeError: a broken relay or target
                raise PeerRejected("relay passed back a malformed message", grpc.StatusCode.DATA_LOSS) from None
