"""Bootstrap tracker (``python main.py tracker --port P``): who is online, and can they be dialled?

A node registers with a signed request carrying its signed peer record; the tracker dials the
advertised address back (a DHT Ping that must be answered by the same node id) before handing it
out, so unreachable addresses never spread. Records expire ``heartbeat_timeout_s`` after the last
heartbeat. All state is soft: after a restart the tracker answers heartbeats with ``known =
False`` and nodes register again, so it can be restarted, and several can run side by side.
Once nodes have joined the DHT they no longer need any tracker.

The tracker speaks TLS like a node: it has its own secp256k1 key and a certificate bound to it
(tls.py). Nodes reach it either at ``host:port``, trusting on first use whichever validly bound
server answers there (for the life of the process), or at ``<node id hex>@host:port``
(:attr:`Tracker.pinned_address`), which refuses any other server. Trust on first use is the
default because a tracker is only a bootstrap hint: everything it hands out is a signed peer
record that nodes verify themselves, and each record's address is checked again by TLS when it
is dialled, so a hostile tracker can withhold peers or hand out chosen (real) ones, not forge
them. An operator who publishes the pinned address closes that too. Give the tracker a
``data_dir`` to keep its key and certificate, and so its pinned address, across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from app.crypto.keys import PrivateKey
from app.node.p2p.addresses import observed_host
from app.node.p2p.auth import ReplayGuard, verify_message
from app.node.p2p.client import PeerClient, Route
from app.node.p2p.config import P2PConfig
from app.node.p2p.dht_service import PING, check_version
from app.node.p2p.errors import P2PError, RpcRefusal
from app.node.p2p.protocol import PROTOCOL_VERSION, pb2
from app.node.p2p.ratelimit import PeerGuard
from app.node.p2p.records import PeerRecord, parse_peer_record
from app.node.p2p.server import CallInfo, Dispatcher, unary
from app.node.p2p.stats import TrafficStats
from app.node.p2p.tls import TlsIdentity, write_private

REGISTER, PEERS, HEARTBEAT = ("/neuroshard.v1.Tracker/Register", "/neuroshard.v1.Tracker/Peers",
                              "/neuroshard.v1.Tracker/Heartbeat")
MAX_PEERS_ANSWER = 64
"""Peers handed out per answer: enough to seed k-buckets, small enough to stay one message."""


@dataclass
class _Entry:
    record: PeerRecord
    last_seen: float
    reachable: bool


def _tracker_key(data_dir: Path | None) -> PrivateKey:
    """The tracker's identity: kept as ``tracker.key`` (0600) in ``data_dir``, else fresh."""
    if data_dir is None:
        return PrivateKey.generate()
    path = data_dir / "tracker.key"
    try:
        return PrivateKey(path.read_bytes())
    except (OSError, ValueError):
        key = PrivateKey.generate()
        data_dir.mkdir(parents=True, exist_ok=True)
        write_private(path, key.to_bytes())
        return key


class Tracker:
    def __init__(self, port: int = 0, host: str = "127.0.0.1", config: P2PConfig | None = None,
                 data_dir: Path | None = None) -> None:
        self.host, self.port = host, port
        self.key = _tracker_key(data_dir)
        self.tls = TlsIdentity.load_or_create(self.key, data_dir)
        self.config = config or P2PConfig()
        self.stats = TrafficStats()
        self.dispatcher = Dispatcher(self.config, PeerGuard(self.config), self.stats)
        self.client = PeerClient(self.config, self.stats)
        self.replay = ReplayGuard(self.config.auth_window_s)
        self.entries: dict[bytes, _Entry] = {}
        self.dispatcher.register(REGISTER, unary(self._register))
        self.dispatcher.register(PEERS, unary(self._peers))
        self.dispatcher.register(HEARTBEAT, unary(self._heartbeat))
        self._server: grpc.aio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pinned_address(self) -> str:
        """The address with this tracker's node id: nodes given it accept no other server."""
        return f"{self.key.node_id.hex()}@{self.address}"

    async def start(self) -> None:
        self._server = self.dispatcher.build_server()
        self.port = self._server.add_secure_port(f"{self.host}:{self.port}", self.tls.server_credentials())
        if self.port == 0:
            raise OSError(f"tracker could not bind {self.host}")
        await self._server.start()
        self._sweeper = asyncio.ensure_future(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(BaseException):
                await self._sweeper
        if self._server is not None:
            await self._server.stop(grace=0.2)
            self._server = None
        await self.client.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(self.config.heartbeat_timeout_s / 4, 5.0))
            horizon = time.monotonic() - self.config.heartbeat_timeout_s
            self.entries = {k: e for k, e in self.entries.items() if e.last_seen >= horizon}

    async def _dial_back(self, record: PeerRecord) -> bool:
        request = pb2.PingRequest(protocol_version=PROTOCOL_VERSION)
        try:
            route = Route(record.address, expect=record.node_id)  # TLS proves who answers
            answer = await self.client.unary(route, PING, request, min(2.0, self.config.dht_rpc_timeout_s))
            return parse_peer_record(answer.record).node_id == record.node_id
        except (P2PError, ValueError):
            return False

    async def _register(self, request: Any, info: CallInfo) -> Any:
        check_version(request)
        verified = verify_message(REGISTER, request, self.replay)
        record = parse_peer_record(request.record)
        if record.public_key != verified.public_key:
            raise RpcRefusal(grpc.StatusCode.PERMISSION_DENIED, "record is not signed by the registering node")
        reachable = bool(record.address) and await self._dial_back(record)
        if reachable or record.relay:
            self.entries[record.node_id] = _Entry(record, time.monotonic(), reachable)
        return pb2.RegisterResponse(protocol_version=PROTOCOL_VERSION, reachable=reachable,
                                    peers=self._sample(exclude=record.node_id),
                                    heartbeat_interval_s=self.config.heartbeat_interval_s,
                                    observed_host=observed_host(info.peer))

    def _sample(self, exclude: bytes = b"", limit: int = MAX_PEERS_ANSWER) -> list[bytes]:
        horizon = time.monotonic() - self.config.heartbeat_timeout_s
        live = [e for k, e in self.entries.items() if k != exclude and e.last_seen >= horizon]
        random.shuffle(live)
        live.sort(key=lambda e: not e.reachable)  # dialable peers first: they can relay
        return [e.record.raw for e in live[:limit]]

    async def _peers(self, request: Any, info: CallInfo) -> Any:
        check_version(request)
        limit = min(request.limit or MAX_PEERS_ANSWER, MAX_PEERS_ANSWER)
        return pb2.PeersResponse(protocol_version=PROTOCOL_VERSION, peers=self._sample(limit=limit))

    async def _heartbeat(self, request: Any, info: CallInfo) -> Any:
        check_version(request)
        verified = verify_message(HEARTBEAT, request, self.replay)
        entry = self.entries.get(verified.node_id)
        if entry is not None:
            entry.last_seen = time.monotonic()
        return pb2.HeartbeatResponse(protocol_version=PROTOCOL_VERSION, known=entry is not None)
