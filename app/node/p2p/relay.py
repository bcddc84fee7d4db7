"""Relaying for nodes nobody can dial (NAT, ``--no-listen``).

The hidden node keeps one outbound ``Relay.Tunnel`` stream open to a reachable peer, opened with a
signed frame carrying its peer record (advertising that relay). Callers send ``Relay.Forward`` to
the relay naming the hidden node; the relay gives the call an id and passes each serialised
message down the tunnel, and the answers back up. The hidden node runs the very same handlers as
for a direct call (server.Dispatcher), so nothing behaves differently behind a relay.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from app.crypto.keys import PrivateKey
from app.node.p2p.aio import cancel_and_wait
from app.node.p2p.auth import ReplayGuard, sign_message, verify_message
from app.node.p2p.client import PeerClient
from app.node.p2p.errors import RpcRefusal
from app.node.p2p.protocol import METHODS, PROTOCOL_VERSION, RELAYABLE, is_compatible, pb2
from app.node.p2p.records import PeerRecord, parse_peer_record
from app.node.p2p.server import CallInfo, Dispatcher
from app.node.p2p.wire import parser, serialize

log = logging.getLogger(__name__)
TUNNEL_PATH = "/neuroshard.v1.Relay/Tunnel"
FORWARD_PATH = "/neuroshard.v1.Relay/Forward"
MAX_TUNNELS = 256
"""A relay serves at most this many hidden nodes: each holds a stream and buffers in memory."""
MAX_TUNNEL_QUEUE = 8 << 20
"""Bytes of callers' messages a relay holds for one tunnel, and of the hidden node's answers
waiting for their callers; past it the relay stops reading that side (HTTP/2 flow control then
slows the sender), so a stranger cannot park data in a relay. A hidden node bounds what its
relay sends down the same way."""
_END = object()


class ByteQueue:
    """Frames waiting to be taken, with the bytes of their messages counted: ``room`` is clear
    while more than ``limit`` bytes wait, and a reader of the side that fills it waits on it."""

    def __init__(self, limit: int = MAX_TUNNEL_QUEUE) -> None:
        self.limit = limit
        self.queued = 0
        self.room = asyncio.Event()
        self.room.set()

    def put(self, queue: asyncio.Queue[Any], frame: Any) -> None:
        queue.put_nowait(frame)
        self.queued += _size(frame)
        if self.queued > self.limit:
            self.room.clear()

    def taken(self, frame: Any) -> None:
        self.queued -= _size(frame)
        if self.queued <= self.limit:
            self.room.set()

    def drop(self, queue: asyncio.Queue[Any]) -> None:
        """The queue's reader is gone: what it never took no longer counts."""
        while not queue.empty():
            self.taken(queue.get_nowait())


def _size(frame: Any) -> int:
    if frame is None or frame is _END:
        return 0
    return len(frame) if isinstance(frame, bytes) else len(frame.message)


class _Tunnel:
    def __init__(self) -> None:
        self.down: asyncio.Queue[Any] = asyncio.Queue()
        self.calls: dict[int, asyncio.Queue[Any]] = {}
        self.sent = ByteQueue()  # callers' messages on their way down the tunnel
        self.answers = ByteQueue()  # the hidden node's messages not yet taken by their callers

    @property
    def queued(self) -> int:
        return self.sent.queued

    @property
    def room(self) -> asyncio.Event:
        return self.sent.room

    def push(self, frame: Any) -> None:
        self.sent.put(self.down, frame)

    def taken(self, frame: Any) -> None:
        self.sent.taken(frame)


class RelayService:
    """The relay side: accepts tunnels and forwards calls into them."""

    def __init__(self, guard: ReplayGuard) -> None:
        self.guard = guard
        self.tunnels: dict[bytes, _Tunnel] = {}
        self._ids = itertools.count(1)

    def install(self, dispatcher: Dispatcher) -> None:
        dispatcher.register(TUNNEL_PATH, self.tunnel)
        dispatcher.register(FORWARD_PATH, self.forward)

    async def tunnel(self, frames: AsyncIterator[Any], info: CallInfo) -> AsyncIterator[Any]:
        first = await anext(frames, None)
        if first is None or not is_compatible(first.protocol_version):
            raise RpcRefusal(grpc.StatusCode.FAILED_PRECONDITION, "incompatible protocol version")
        verified = verify_message(TUNNEL_PATH, first, self.guard)
        record = parse_peer_record(first.record)
        if record.public_key != verified.public_key:
            raise RpcRefusal(grpc.StatusCode.PERMISSION_DENIED, "tunnel record is not signed by the caller")
        if len(self.tunnels) >= MAX_TUNNELS and record.node_id not in self.tunnels:
            raise RpcRefusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "this relay serves no more hidden nodes")
        tunnel = self.tunnels[record.node_id] = _Tunnel()
        reader = asyncio.ensure_future(self._read_up(frames, tunnel))
        try:
            yield pb2.RelayFrame(protocol_version=PROTOCOL_VERSION)  # accepted
            while True:
                frame = await tunnel.down.get()
                tunnel.taken(frame)
                if frame is _END:
                    return
                yield frame
        finally:
            reader.cancel()
            if self.tunnels.get(record.node_id) is tunnel:
                del self.tunnels[record.node_id]
            for queue in tunnel.calls.values():
                queue.put_nowait(pb2.RelayFrame(end=True, code=grpc.StatusCode.UNAVAILABLE.value[0],
                                                details="hidden node disconnected from its relay"))

    async def _read_up(self, frames: AsyncIterator[Any], tunnel: _Tunnel) -> None:
        try:
            async for frame in frames:
                queue = tunnel.calls.get(frame.call_id)
                if queue is not None:
                    tunnel.answers.put(queue, frame)
                    await tunnel.answers.room.wait()  # callers are slow to take answers: stop reading
        finally:
            tunnel.down.put_nowait(_END)

    async def forward(self, frames: AsyncIterator[Any], info: CallInfo) -> AsyncIterator[Any]:
        first = await anext(frames, None)
        if first is None or not is_compatible(first.protocol_version):
            raise RpcRefusal(grpc.StatusCode.FAILED_PRECONDITION, "incompatible protocol version")
        if first.method not in RELAYABLE:
            raise RpcRefusal(grpc.StatusCode.INVALID_ARGUMENT, "method cannot be relayed")
        tunnel = self.tunnels.get(first.target)
        if tunnel is None:
            raise RpcRefusal(grpc.StatusCode.UNAVAILABLE, "target is not connected to this relay")
        call_id = next(self._ids)
        replies: asyncio.Queue[Any] = asyncio.Queue()
        tunnel.calls[call_id] = replies
        tunnel.down.put_nowait(pb2.RelayFrame(call_id=call_id, method=first.method))
        pump = asyncio.ensure_future(self._pump(frames, tunnel, call_id))
        try:
            while True:
                frame = await replies.get()
                tunnel.answers.taken(frame)
                if frame.end:
                    if frame.code:
                        raise RpcRefusal(grpc.StatusCode(_code(frame.code)), frame.details[:500])
                    yield pb2.RelayFrame(end=True)
                    return
                yield pb2.RelayFrame(message=frame.message)
        finally:
            pump.cancel()
            tunnel.calls.pop(call_id, None)
            tunnel.answers.drop(replies)  # answers its caller left behind do not hold the tunnel up

    @staticmethod
    async def _pump(frames: AsyncIterator[Any], tunnel: _Tunnel, call_id: int) -> None:
        async for frame in frames:
            if frame.end:
                break
            await tunnel.room.wait()  # the tunnel is backed up: stop reading this caller
            tunnel.push(pb2.RelayFrame(call_id=call_id, message=frame.message))
        tunnel.down.put_nowait(pb2.RelayFrame(call_id=call_id, end=True))


def _code(value: int) -> tuple[int, str]:
    for status in grpc.StatusCode:
        if status.value[0] == value:
            return status.value
    return grpc.StatusCode.UNKNOWN.value


class TunnelClient:
    """The hidden node's side: holds the tunnel open and serves calls arriving through it."""

    def __init__(self, key: PrivateKey, client: PeerClient, dispatcher: Dispatcher,
                 record_for: Callable[[str], PeerRecord]) -> None:
        self.key = key
        self.client = client
        self.dispatcher = dispatcher
        self.record_for = record_for
        self.relay: str = ""
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._calls: dict[int, asyncio.Queue[Any]] = {}
        self._arrived = ByteQueue()  # callers' messages the relay sent that our handlers have not read
        self._workers: set[asyncio.Task[None]] = set()

    async def open(self, relay: str, timeout: float, *, relay_id: bytes) -> None:
        """Open the tunnel to the node ``relay_id`` at ``relay``; returns once it accepted."""
        await self.close()
        self.relay = relay
        self.connected = asyncio.Event()
        self._task = asyncio.ensure_future(self._run(relay, relay_id))
        waiter = asyncio.ensure_future(self.connected.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            await self.close()
            raise ConnectionError(f"relay {relay} did not accept the tunnel")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._workers) if t is not None]
        self._task = None
        await cancel_and_wait(tasks)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and self.connected.is_set()

    async def _run(self, relay: str, relay_id: bytes) -> None:
        up: asyncio.Queue[Any] = asyncio.Queue()
        first = pb2.RelayFrame(protocol_version=PROTOCOL_VERSION, record=self.record_for(relay).raw)
        sign_message(self.key, TUNNEL_PATH, first, relay_id)

        async def outgoing() -> AsyncIterator[Any]:
            yield first
            while True:
                yield await up.get()

        try:
            async for frame in self.client.stream(relay, TUNNEL_PATH, outgoing(), timeout=365 * 86400.0):
                if not self.connected.is_set():
                    self.connected.set()
                    continue
                self._on_down(frame, up)
                await self._arrived.room.wait()  # our handlers are behind: stop reading the relay
        finally:
            for queue in self._calls.values():
                queue.put_nowait(None)
            self._calls.clear()

    def _on_down(self, frame: Any, up: asyncio.Queue[Any]) -> None:
        queue = self._calls.get(frame.call_id)
        if queue is None:
            if frame.method not in METHODS or frame.end:
                return
            queue = self._calls[frame.call_id] = asyncio.Queue()
            worker = asyncio.ensure_future(self._serve(frame.call_id, frame.method, queue, up))
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
            return
        self._arrived.put(queue, None if frame.end else frame.message)

    async def _serve(self, call_id: int, path: str, queue: asyncio.Queue[Any], up: asyncio.Queue[Any]) -> None:
        method = METHODS[path]
        parse, stats = parser(method.request), self.dispatcher.stats

        async def requests() -> AsyncIterator[Any]:
            while (raw := await queue.get()) is not None:
                self._arrived.taken(raw)
                stats.add_received(method.traffic, len(raw))
                try:
                    yield parse(raw)
                except Exception:  # protobuf DecodeError
                    raise RpcRefusal(grpc.StatusCode.INVALID_ARGUMENT, "malformed request") from None

        peer = f"relay:{self.relay}"
        code, details = 0, ""
        try:
            async for response in self.dispatcher.dispatch(path, requests(), peer):
                raw = serialize(response)
                stats.add_sent(method.traffic, len(raw))
                up.put_nowait(pb2.RelayFrame(call_id=call_id, message=raw))
        except Exception as exc:  # becomes a status frame, as a direct call would get
            refusal = self.dispatcher.refusal(exc, peer, path)
            code, details = refusal.code.value[0], refusal.reason
        finally:
            self._calls.pop(call_id, None)
            self._arrived.drop(queue)  # what the handler never read
        up.put_nowait(pb2.RelayFrame(call_id=call_id, end=True, code=code, details=details))
