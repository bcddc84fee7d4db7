"""Outgoing calls: a TLS channel per peer, deadlines on every call, typed errors, relayed delivery.

A peer is dialled at its address; a hidden node (no address) is reached through its relay with
``Relay.Forward`` naming it as target, each message passed through as serialised bytes.

Every channel is TLS, pinned to the certificate the server presented when the channel was made
(tls.py). Before that, the certificate's node-identity binding is checked, and it must name the
node the caller meant to reach: the node of a peer record, or the id pinned in an address written
``<node id hex>@host:port``. A plain ``host:port`` trusts whichever node answers there first
(its binding still has to be valid); the channel stays pinned to it. A server whose certificate
has no valid binding, or is bound to another node than the one expected, is refused with
PERMISSION_DENIED and banned for ``ban_max_s`` (see :meth:`PeerClient.channel` for whom).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import P2PError, PeerRejected, PeerUnavailable, RequestTimeout, error_from_status
from app.node.p2p.protocol import METHODS, PROTOCOL_VERSION, Method, Shape, pb2
from app.node.p2p.records import PeerRecord
from app.node.p2p.stats import TrafficStats
from app.node.p2p.tls import TlsIdentityError, bound_node_id, pinned_channel, probe
from app.node.p2p.wire import counting, parser, serialize

log = logging.getLogger(__name__)

_RELAY_FORWARD = "/neuroshard.v1.Relay/Forward"
MAX_CHANNELS = 256
"""Open channels kept per node (one TCP connection each); the least recently used is closed
beyond this, so a long-lived node in a big swarm does not run out of file descriptors."""


class IdentityMismatch(PeerRejected):
    """The server's TLS certificate is not validly bound to the node the caller meant to reach."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, grpc.StatusCode.PERMISSION_DENIED)


@dataclass(frozen=True)
class Route:
    """Where a call goes: ``dial`` is the address to connect to; ``target`` is set when ``dial``
    is a relay passing the call to the hidden node with that id. ``expect`` is the node id the
    server at ``dial`` must prove in TLS (empty: any validly bound node). The certificate's
    binding is what proves it; a record's ``tls`` fingerprint is not compared, since a record
    may be older than a certificate its node made since, and only that node's key can bind one."""

    dial: str
    target: bytes = b""
    expect: bytes = b""

    @classmethod
    def of(cls, peer: PeerRecord | str | Route) -> Route:
        if isinstance(peer, Route):
            return peer
        if isinstance(peer, str):
            return cls.parse(peer)
        if peer.address:
            return cls(peer.address, expect=peer.node_id)
        if peer.relay:
            return cls(peer.relay, peer.node_id)
        raise PeerUnavailable("peer record has neither an address nor a relay")

    @classmethod
    def parse(cls, address: str) -> Route:
        """``host:port`` or ``<64 hex node id>@host:port`` (pins the server's identity)."""
        pin, at, rest = address.partition("@")
        if not at:
            return cls(address)
        try:
            expect = bytes.fromhex(pin)
        except ValueError:
            expect = b""
        if len(expect) != 32:
            raise PeerUnavailable(f"{address!r}: a pinned address is <64 hex digits>@host:port")
        return cls(rest, expect=expect)


@dataclass
class _Pinned:
    """An open channel and the identity its certificate proved."""

    channel: grpc.aio.Channel
    node_id: bytes


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
        self._channels: OrderedDict[str, _Pinned] = OrderedDict()
        self._dialing: dict[str, asyncio.Future[_Pinned]] = {}
        self._banned: dict[str | bytes, float] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.direct: dict[bytes, str] = {}
        """Hidden node id -> the local end of a hole-punched path to it (holepunch.py): calls
        that would go through its relay go there instead, over a channel pinned by ``adopt``."""
        self.on_relayed: Callable[[Route], None] | None = None
        """Told of each call that goes through a relay (the hole puncher starts from these)."""

    def banned(self, who: str | bytes) -> bool:
        """Whether an address (a server whose certificate has no valid binding) or a node id (whose
        record led to a server that proved another node) is banned for now."""
        until = self._banned.get(who)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._banned[who]
            return False
        return True

    def _ban(self, who: str | bytes) -> None:
        self._banned[who] = time.monotonic() + self.config.ban_max_s

    async def channel(self, route: Route) -> grpc.aio.Channel:
        """The TLS channel to ``route.dial``, after checking the server is the node expected.

        A mismatch bans the *expected* node, not the address: the server there proved, with a
        valid binding, that it is someone else, so the record (or pin) that sent us there is what
        lied or went stale; banning the address would let anyone's forged claim cut an honest
        node off."""
        address = route.dial
        if self.banned(address):
            raise IdentityMismatch(f"{address} is banned: its certificate carries no valid node binding")
        if route.expect and self.banned(route.expect):
            raise IdentityMismatch(f"node {route.expect.hex()[:16]} is banned: its address proved another node")
        pinned = self._channels.get(address)
        if pinned is not None and self._fits(pinned, route):
            self._channels.move_to_end(address)
            return pinned.channel
        if pinned is not None and pinned.channel.get_state() != grpc.ChannelConnectivity.READY:
            del self._channels[address]  # maybe another node answers there now: check again
            self._retire(pinned.channel)
            pinned = None
        if pinned is None:
            pinned = await self._dial(address)
        if not self._fits(pinned, route):
            self._ban(route.expect)
            raise IdentityMismatch(f"{address} proved node {pinned.node_id.hex()[:16]}, "
                                   f"not {route.expect.hex()[:16]}")
        return pinned.channel

    @staticmethod
    def _fits(pinned: _Pinned, route: Route) -> bool:
        return not route.expect or pinned.node_id == route.expect

    async def _dial(self, address: str) -> _Pinned:
        """Probe, check and pin one address; concurrent callers share one handshake."""
        pending = self._dialing.get(address)
        if pending is None:
            pending = self._dialing[address] = asyncio.ensure_future(self._open(address))
            pending.add_done_callback(lambda done: self._dialed(address, done))
        return await asyncio.shield(pending)

    def _dialed(self, address: str, done: asyncio.Future[_Pinned]) -> None:
        self._dialing.pop(address, None)
        if not done.cancelled():
            done.exception()  # retrieved here: every waiter may have given up already

    async def _open(self, address: str) -> _Pinned:
        try:
            der = await probe(address, self.config.tls_handshake_timeout_s)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise PeerUnavailable(f"{address}: TLS handshake failed: {exc!r}") from None
        try:
            node_id = bound_node_id(der)
        except TlsIdentityError as exc:
            self._ban(address)
            raise IdentityMismatch(f"{address}: {exc}") from None
        return self._keep(address, _Pinned(self._pinned_channel(address, der), node_id))

    def _pinned_channel(self, address: str, der: bytes) -> grpc.aio.Channel:
        return pinned_channel(address, der, [
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.enable_retries", 0),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ])

    def adopt(self, address: str, cert_der: bytes, expect: bytes) -> None:
        """Pin a channel to ``address`` on a certificate learned another way (a hole punch's
        signed answer) instead of probing it: it must be validly bound to ``expect``, and gRPC's
        own handshake then accepts only that certificate there."""
        try:
            node_id = bound_node_id(cert_der)
        except TlsIdentityError as exc:
            raise IdentityMismatch(f"{address}: {exc}") from None
        if node_id != expect:
            raise IdentityMismatch(f"certificate for {address} is bound to node {node_id.hex()[:16]}, "
                                   f"not {expect.hex()[:16]}")
        self._keep(address, _Pinned(self._pinned_channel(address, cert_der), node_id))

    def _keep(self, address: str, pinned: _Pinned) -> _Pinned:
        old = self._channels.pop(address, None)
        if old is not None:
            self._retire(old.channel)
        self._channels[address] = pinned
        if len(self._channels) > MAX_CHANNELS:
            _, oldest = self._channels.popitem(last=False)
            self._retire(oldest.channel)
        return pinned

    def _retire(self, channel: grpc.aio.Channel) -> None:
        task = asyncio.ensure_future(channel.close(grace=1.0))  # lets its calls in flight end
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _drop_if_disconnected(self, address: str) -> None:
        """After UNAVAILABLE: a channel that is not connected may be pinned to a stale certificate
        (the node restarted without its data dir, or another node took the port), so the next
        call dials afresh, with a new check. A connected one answered UNAVAILABLE itself (busy,
        a relay without the target) and stays; calls still on a dropped one may finish."""
        pinned = self._channels.get(address)
        if pinned is None or pinned.channel.get_state() == grpc.ChannelConnectivity.READY:
            return
        del self._channels[address]
        self._retire(pinned.channel)

    def pinned_node(self, address: str) -> bytes | None:
        """The node id the open channel to ``address`` is pinned to, if one is open."""
        pinned = self._channels.get(address)
        return pinned.node_id if pinned is not None else None

    async def forget(self, address: str) -> None:
        pinned = self._channels.pop(address, None)
        if pinned is not None:
            await pinned.channel.close(grace=None)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), OrderedDict()
        for pinned in channels:
            with contextlib.suppress(Exception):
                await pinned.channel.close(grace=None)

    def route(self, peer: PeerRecord | str | Route) -> Route:
        """Where a call to ``peer`` goes now: a relayed peer with a hole-punched path is dialled
        there (pinned on its identity), otherwise as ``Route.of`` says."""
        route = Route.of(peer)
        if route.target:
            bridged = self.direct.get(route.target)
            if bridged is not None:
                return Route(bridged, expect=route.target)
            if self.on_relayed is not None:
                self.on_relayed(route)
        return route

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
        route = self.route(peer)
        method = METHODS[path]
        try:
            async with asyncio.timeout(timeout):
                channel = await self.channel(route)
            if route.target:
                source = self._relayed(channel, route, method, requests, timeout)
            else:
                source = self._direct(channel, method, requests, timeout)
            async for response in source:
                yield response
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self._drop_if_disconnected(route.dial)
            raise error_from_status(exc.code(), exc.details(), route.dial) from None
        except (asyncio.TimeoutError, TimeoutError):
            raise RequestTimeout(f"{route.dial} did not answer within {timeout:.2f} s") from None
        except P2PError:
            raise
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # the caller itself is being cancelled
            # gRPC raises a bare CancelledError for a call cancelled on this side: its channel was
            # closed under it (retired after UNAVAILABLE, replaced, evicted, or the client closed).
            # For the caller that is a failed call to fail over from; let through, it would end the
            # caller's task as if cancelled (a driver's step, a hedged attempt, a gather's siblings).
            raise PeerUnavailable(f"{route.dial}: the call was cut off when its channel closed") from None
        except Exception as exc:  # grpc's own errors outside AioRpcError (a call torn down mid-write)
            raise PeerUnavailable(f"{route.dial}: call failed: {exc!r}") from None

    async def _direct(self, channel: grpc.aio.Channel, method: Method, requests: Iterable[Any] | AsyncIterable[Any],
                      timeout: float) -> AsyncIterator[Any]:
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

    async def _relayed(self, channel: grpc.aio.Channel, route: Route, method: Method,
                       requests: Iterable[Any] | AsyncIterable[Any], timeout: float) -> AsyncIterator[Any]:
        kind, parse = method.traffic, parser(method.response)

        async def frames() -> AsyncIterator[Any]:
            yield pb2.RelayFrame(protocol_version=PROTOCOL_VERSION, target=route.target, method=method.path)
            async for request in _aiter(requests):
                raw = serialize(request)
                self.stats.add_sent(kind, len(raw))
                yield pb2.RelayFrame(message=raw)
            yield pb2.RelayFrame(end=True)

        relay = METHODS[_RELAY_FORWARD]
        call = channel.stream_stream(
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
