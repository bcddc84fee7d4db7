"""P2PNode: one node's network presence (seed 002: P2P manager, DHT protocol, swarm router).

It binds one gRPC port for every service, joins through trackers (register, dial-back, peers),
bootstraps the Kademlia DHT, announces its layers, and serves the handlers that training
registers. With ``listen=False`` (or when the tracker cannot dial it back) it serves through a
relay tunnel instead. It knows bytes, tensors, peers and signatures; never training.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import torch

from app.crypto.keys import PrivateKey
from app.node.p2p import services, upnp
from app.node.p2p.addresses import is_unspecified, primary_address, reported_host
from app.node.p2p.aio import cancel_and_wait
from app.node.p2p.auth import ReplayGuard
from app.node.p2p.bandwidth import Bandwidth
from app.node.p2p.client import PeerClient, Route
from app.node.p2p.config import P2PConfig
from app.node.p2p.dht import KademliaNode
from app.node.p2p.dht_service import PING, DhtService, GrpcDhtTransport, raw_record
from app.node.p2p.errors import P2PError
from app.node.p2p.holepunch import HolePuncher, PunchOutcome
from app.node.p2p.protocol import PROTOCOL_VERSION, pb2
from app.node.p2p.ratelimit import PeerGuard
from app.node.p2p.records import PeerRecord, parse_peer_record, sign_peer_record
from app.node.p2p.registry import LayerRegistry
from app.node.p2p.relay import RelayService, TunnelClient
from app.node.p2p.router import FailoverEvent, SwarmRouter
from app.node.p2p.server import Dispatcher
from app.node.p2p.stats import TrafficStats
from app.node.p2p.tensor_rpc import call_tensors
from app.node.p2p.tls import TlsIdentity
from app.node.p2p.tracker_client import TrackerClient

log = logging.getLogger(__name__)
StageHandler = Callable[[bytes, str, dict[str, Any], dict[str, torch.Tensor]],
                        Awaitable[tuple[dict[str, Any], dict[str, torch.Tensor]]]]
"""``(caller, kind, meta, tensors)``: ``caller`` is the verified node id of whoever signed it."""
REPLAY_FILE = "replay.nonces"
MAX_KNOWN_ADDRESSES = 1024
_RTT_SMOOTHING = 0.3
"""EWMA weight of a new round-trip sample: reacts within a few calls, ignores one-off spikes."""


class P2PNode:
    def __init__(self, key: PrivateKey, *, host: str = "127.0.0.1", port: int = 0,
                 trackers: list[str] | None = None, listen: bool = True, config: P2PConfig | None = None,
                 on_failover: Callable[[FailoverEvent], None] | None = None, advertise: str = "",
                 advertise_host: str = "", tls_dir: Path | None = None, data_dir: Path | None = None,
                 on_punch: Callable[[PunchOutcome], None] | None = None) -> None:
        """``advertise`` is the host:port others should dial when it differs from the bound one
        (a public address in front of NAT port forwarding); the tracker checks it by dialling.
        ``advertise_host`` is the host others dial at the bound port (the volunteer's setting);
        without one a node bound to every interface names its address on this network
        (addresses.primary_address), never 0.0.0.0.
        ``tls_dir`` keeps the node's TLS certificate across restarts (the data dir); without one
        a fresh certificate, bound to the same key, is made in memory. ``data_dir`` keeps the
        replay window across restarts (auth.ReplayGuard). ``on_punch`` hears how each hole punch
        towards a relayed peer ended (holepunch.py)."""
        self.key = key
        self.tls = TlsIdentity.load_or_create(key, tls_dir)
        self.advertise = advertise
        self.host, self.port, self.listen = host, port, listen
        self._local_host = advertise_host
        self.trackers = list(trackers or [])
        self.config = config or P2PConfig()
        self.stats = TrafficStats()
        self.guard = PeerGuard(self.config)
        self.replay = ReplayGuard(self.config.auth_window_s, key.node_id,
                                  path=data_dir / REPLAY_FILE if data_dir is not None else None)
        self._ids_at: OrderedDict[str, bytes] = OrderedDict()  # address -> node id that answered
        self.observed_by: OrderedDict[bytes, str] = OrderedDict()  # peer -> our IP as it saw us (pings)
        self.dispatcher = Dispatcher(self.config, self.guard, self.stats)
        self.client = PeerClient(self.config, self.stats)
        self.bandwidth = Bandwidth()  # the volunteer's upload/download caps on tensor streams
        self.latency: dict[bytes, float] = {}
        self.relay_address = ""
        self.offer: dict[str, Any] = {"tier": "", "capacity": 0.0, "load": 0.0, "memory": 0}
        self._record: PeerRecord | None = None
        self.upnp_mapping: upnp.Mapping | None = None
        self._server: grpc.aio.Server | None = None
        self._loops: list[asyncio.Task[None]] = []
        transport = GrpcDhtTransport(key, self.client, self.config, self.record, self._on_rtt)
        self.dht = KademliaNode(key, transport, self.config)
        self.registry = LayerRegistry(self.dht, key, self.config, self._where, self.latency.get)
        self.router = SwarmRouter(self, self.config, on_failover)
        self.tunnel = TunnelClient(key, self.client, self.dispatcher, self._record_via)
        self.tracker_client = TrackerClient(self)
        self.handlers = services.Handlers()
        DhtService(self.dht, self.record, self.replay, self._on_rtt).install(self.dispatcher)
        services.install(self.dispatcher, self.handlers, self.replay, self.config, self.bandwidth)
        if listen:
            RelayService(self.replay).install(self.dispatcher)
        self.puncher: HolePuncher | None = None
        if listen and self.config.hole_punching:
            self.puncher = HolePuncher(key, self.client, self.config, self.replay, self.tls, local_host=host,
                                       server_address=self._server_address, lan_host=lambda: self.local_host,
                                       observed_host=lambda: self.tracker_client.observed_host, on_outcome=on_punch)
            self.puncher.install(self.dispatcher)

    # ------------------------------------------------------------------ identity and address
    @property
    def node_id(self) -> bytes:
        return self.key.node_id

    @property
    def address(self) -> str:
        """``host:port`` others dial (the bound port unless ``advertise`` says otherwise); empty for a
        node that does not listen."""
        if not self.listen or self._server is None:
            return ""
        return self.advertise or f"{self.local_host}:{self.port}"

    @property
    def local_host(self) -> str:
        """The host peers on this network dial at our bound port: the configured one, the bound one
        when concrete, else this computer's address on its network (loopback when it has none)."""
        if not self._local_host:
            self._local_host = (self.host if not is_unspecified(self.host)
                                else primary_address() or "127.0.0.1")
        return self._local_host

    def _server_address(self) -> tuple[str, int] | None:
        """Where this process reaches its own gRPC server (punched connections are spliced there)."""
        if self._server is None:
            return None
        return ("127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host), self.port

    def _where(self) -> tuple[str, str]:
        if self.relay_address and not self.tracker_client.reachable:
            return "", self.relay_address  # our address is not dialable: only the relay is
        return self.address, self.relay_address

    def record(self) -> PeerRecord | None:
        """Our signed peer record, re-signed when address, relay or offer changed; None while the
        node can be reached neither directly nor through a relay."""
        want = (*self._where(), self.offer["tier"], self.offer["capacity"], self.offer["load"],
                self.offer.get("memory", 0))
        if not want[0] and not want[1]:
            return None
        rec = self._record
        if rec is None or (rec.address, rec.relay, rec.tier, rec.capacity, rec.load, rec.memory) != want:
            tls = self.tls.fingerprint if want[0] else b""
            self._record = sign_peer_record(self.key, want[0], want[1], want[2], want[3], want[4], tls,
                                            memory=want[5])
        return self._record

    def _record_via(self, relay: str) -> PeerRecord:
        return sign_peer_record(self.key, "", relay, self.offer["tier"], self.offer["capacity"],
                                self.offer["load"], memory=self.offer.get("memory", 0))

    def set_offer(self, tier: str = "", capacity: float = 0.0, load: float = 0.0, memory: int = 0) -> None:
        """What the node advertises in its peer record (tier, capacity, current load, memory budget)."""
        self.offer = {"tier": tier, "capacity": float(capacity), "load": float(load), "memory": int(memory)}

    def _on_rtt(self, node_id: bytes, rtt_ms: float) -> None:
        old = self.latency.get(node_id)
        self.latency[node_id] = rtt_ms if old is None else old + _RTT_SMOOTHING * (rtt_ms - old)

    def peers(self) -> list[PeerRecord]:
        """Peers in our routing table (answered recently), with tier and measured latency."""
        return [r.with_latency(self.latency.get(n)) for n, r in self.dht.table.contacts()]

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.listen:
            self._server = self.dispatcher.build_server()
            try:
                self.port = self._server.add_secure_port(f"{self.host}:{self.port}", self.tls.server_credentials())
            except RuntimeError as exc:
                raise OSError(f"cannot listen on {self.host}:{self.port}: {exc}") from None
            await self._server.start()
        self.dht.start()
        if self.trackers:
            await self.tracker_client.join()
        self._loops.append(asyncio.ensure_future(self._heartbeat_loop()))

    async def stop(self) -> None:
        """Stop serving and calling; quick (well under a second) and safe to call twice."""
        loops, self._loops = self._loops, []
        await cancel_and_wait(loops)
        if self.puncher is not None:
            await self.puncher.close()
        await self.tunnel.close()
        await self.dht.stop()
        if self.upnp_mapping is not None:
            with contextlib.suppress(OSError):
                await upnp.unmap_port(self.upnp_mapping, self.config.upnp_timeout_s)
            self.upnp_mapping = None
        if self._server is not None:
            await self._server.stop(grace=0.1)
            self._server = None
        await self.client.close()
        self.replay.close()

    async def kill(self) -> None:
        """Stop abruptly, as a crash would (benchmarks and tests of failover)."""
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        await self.stop()

    async def bootstrap(self, addresses: list[str]) -> int:
        """Join the DHT through known node addresses (no tracker needed); returns the table size."""
        records = []
        for address in addresses:
            try:
                records.append(await self.ping(address))
            except P2PError as exc:
                log.info("bootstrap peer %s unreachable: %s", address, exc)
        return await self.dht.bootstrap(records)

    async def ping(self, peer: PeerRecord | str) -> PeerRecord:
        """The peer's signed record; for a str address, whoever answers there."""
        start = time.monotonic()
        answer = await self.client.unary(peer, PING, pb2.PingRequest(
            protocol_version=PROTOCOL_VERSION, sender=raw_record(self.record())), self.config.dht_rpc_timeout_s)
        record = parse_peer_record(answer.record)
        self._on_rtt(record.node_id, (time.monotonic() - start) * 1000.0)
        self.dht.observe(record)
        seen = reported_host(answer.observed_host)
        if seen:  # where this peer saw us come from (untrusted: counted per peer, never dialled)
            self.observed_by.pop(record.node_id, None)
            self.observed_by[record.node_id] = seen
            while len(self.observed_by) > MAX_KNOWN_ADDRESSES:
                self.observed_by.popitem(last=False)
        return record

    async def _heartbeat_loop(self) -> None:
        """Tracker heartbeats, relay upkeep and layer announcements; one failing step never
        stops the others (a tracker being down must not let our announcements expire)."""
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            steps: list[Callable[[], Awaitable[object]]] = []
            if self.relay_address and not self.tunnel.alive:
                steps.append(lambda: self.tracker_client.replace_relay(self.peers()))
            if self.trackers:
                steps.append(self.tracker_client.heartbeat)
            steps.append(self.registry.refresh)
            for step in steps:
                try:
                    await step()
                except Exception as exc:  # logged and retried next beat
                    log.info("heartbeat step failed: %s", exc)

    # ------------------------------------------------------------------ handler registration
    def set_stage_handler(self, fn: StageHandler) -> None:
        self.handlers.stage = fn

    def set_sync_handler(self, fn: Callable[[bytes, dict[str, Any], dict[str, torch.Tensor]],
                                            Awaitable[tuple[dict[str, Any], dict[str, torch.Tensor]]]]) -> None:
        self.handlers.sync = fn

    def set_weights_handler(self, fn: Callable[[bytes, dict[str, Any]], Awaitable[dict[str, torch.Tensor]]]) -> None:
        self.handlers.weights = fn

    def set_gossip_handler(self, topic: str, fn: Callable[[bytes, list[bytes]], Awaitable[list[bytes]]]) -> None:
        self.handlers.gossip[topic] = fn

    def set_data_handler(self, fn: Callable[[str], Awaitable[bytes | None]]) -> None:
        self.handlers.data = fn

    def set_verify_handler(self, fn: Callable[[bytes, str, int | None], Awaitable[tuple[bytes, bytes] | None]] | None
                           ) -> None:
        """Serve verifiers the committed steps of this node's training proofs (services.VERIFY_STEP)."""
        self.handlers.verify = fn

    async def verify_step(self, peer: PeerRecord | str, proof_id: str, step: int | None, timeout: float,
                          max_bytes: int) -> tuple[bytes, bytes]:
        """Ask ``peer`` for committed step ``step`` of its proof ``proof_id`` (None: the leaves only)."""
        return await services.call_verify_step(self.client, self.key, Route.of(peer), proof_id, step, timeout,
                                               recipient=await self.recipient(peer), max_bytes=max_bytes,
                                               bandwidth=self.bandwidth)

    def set_inference_handler(self, fn: Callable[[str, bytes, Any], Awaitable[Any]] | None) -> None:
        """Serve inference sessions with ``fn(path, caller, request)``; None stops serving them."""
        self.handlers.inference = fn

    # ------------------------------------------------------------------ client calls
    async def recipient(self, peer: PeerRecord | str | Route) -> bytes:
        """The node id a request to ``peer`` is signed for: a record's own id, a relayed route's
        target, a pinned address's id, or for a bare address the id of whoever answers a ping
        there (remembered)."""
        if isinstance(peer, PeerRecord):
            return peer.node_id
        route = Route.of(peer)
        if route.target or route.expect:
            return route.target or route.expect
        known = self._ids_at.get(route.dial)
        if known is None:
            known = (await self.ping(route.dial)).node_id
            self._ids_at[route.dial] = known
            while len(self._ids_at) > MAX_KNOWN_ADDRESSES:
                self._ids_at.popitem(last=False)
        return known

    async def call_stage(self, peer: PeerRecord | str, kind: str, meta: dict[str, Any],
                         tensors: dict[str, torch.Tensor], timeout: float) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Run a forward/backward stage on ``peer``; raises a typed P2PError on failure."""
        return await self.call_stage_hedged(peer, kind, meta, tensors, timeout, None)

    async def call_stage_hedged(self, peer: PeerRecord | str, kind: str, meta: dict[str, Any],
                                tensors: dict[str, torch.Tensor], timeout: float,
                                on_silence: Callable[[], None] | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        if kind in ("commit", "finish"):  # small typed unary calls; ``meta`` is the request
            path = services.COMMIT if kind == "commit" else services.FINISH
            reply = await services.call_signed(self.client, self.key, Route.of(peer), path, meta, timeout,
                                              recipient=await self.recipient(peer))
            return reply, {}
        if kind not in ("forward", "backward"):
            raise ValueError(f"stage kind must be forward, backward, commit or finish, not {kind!r}")
        path = services.FORWARD if kind == "forward" else services.BACKWARD
        return await call_tensors(self.client, self.key, peer, path, kind, meta, tensors, timeout, self.config,
                                  on_silence, self.bandwidth, recipient=await self.recipient(peer))

    async def call_sync(self, peer: PeerRecord | str, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                        timeout: float) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return await call_tensors(self.client, self.key, peer, services.EXCHANGE, "sync", meta, tensors, timeout,
                                  self.config, bandwidth=self.bandwidth, recipient=await self.recipient(peer))

    async def fetch_weights(self, peer: PeerRecord | str, meta: dict[str, Any], timeout: float) -> dict[str, torch.Tensor]:
        _, tensors = await call_tensors(self.client, self.key, peer, services.WEIGHTS, "weights", meta, {},
                                        timeout, self.config, bandwidth=self.bandwidth,
                                        recipient=await self.recipient(peer))
        return tensors

    async def gossip(self, peer: PeerRecord | str, topic: str, payloads: list[bytes], timeout: float) -> list[bytes]:
        return await services.call_gossip(self.client, self.key, Route.of(peer), topic, payloads, timeout,
                                          recipient=await self.recipient(peer))

    async def call_inference(self, peer: PeerRecord | str, path: str, request: Any, timeout: float) -> Any:
        """One inference-session call (services.INFERENCE_*), signed for ``peer``."""
        return await services.call_signed(self.client, self.key, Route.of(peer), path, request, timeout,
                                          recipient=await self.recipient(peer))

    async def fetch_data(self, peer: PeerRecord | str, shard_id: str, timeout: float) -> bytes | None:
        return await services.call_data(self.client, Route.of(peer), shard_id, timeout, self.config, self.bandwidth)

    async def who_holds(self, layer: int) -> list[PeerRecord]:
        return await self.registry.who_holds(layer)
