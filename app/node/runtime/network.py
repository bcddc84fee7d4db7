"""NetworkService: the node's P2P presence as the runtime sees it.

Starts the P2P node, joins through the trackers and the peers LAN discovery finds on this network
(or reports that none answered and none was found, which makes the runtime start a solo genesis
network; a peer found later on the LAN still joins it, and the two train together), advertises what the node offers (tier, whole layers that
fit), and watches the peer set so the UI gets PeerJoined / PeerLeft / NetworkChanged events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.crypto.keys import PrivateKey
from app.node.config import UsageCaps
from app.node.events import Event, HolePunched, NetworkChanged, PeerJoined, PeerLeft, ReachabilityTested
from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import P2PError
from app.node.p2p.holepunch import PunchOutcome
from app.node.p2p.invite import parse_invite
from app.node.p2p.lan import SERVICE_TYPE, LanDiscovery
from app.node.p2p.node import P2PNode
from app.node.p2p.reachability import Reachability, self_test
from app.node.p2p.records import LayerAnnouncement, PeerRecord

log = logging.getLogger("neuroshard.runtime.network")

PEER_WATCH_INTERVAL_S = 1.0


def p2p_config_from(raw: dict[str, Any]) -> P2PConfig:
    """The ``[p2p]`` section, read through the config schema (P2PConfigError names the key)."""
    return P2PConfig.from_dict(raw)


class NetworkService:
    def __init__(self, node: P2PNode, *, trackers: tuple[str, ...], emit: Callable[[Event], None],
                 lan: LanDiscovery | None = None, invites: tuple[str, ...] = ()) -> None:
        """Around ``node`` (not started yet: ``start`` does), joining through ``trackers``, the
        friends' nodes of ``invites`` (invite codes, p2p/invite.py) and, when given, the peers
        ``lan`` finds on this network."""
        self.node = node
        self.lan = lan
        self.invites = tuple(parse_invite(code) for code in invites)
        self.invited: dict[bytes, PeerRecord] = {}  # invited nodes that answered as themselves
        self.emit = emit
        self.trackers = trackers
        self.known: dict[bytes, PeerRecord] = {}
        self._watch: asyncio.Task[None] | None = None
        self._first_test: asyncio.Task[Reachability] | None = None
        self.reachability: Reachability | None = None  # the last self-test's result
        self.replicas: tuple[int, ...] = ()  # live holders of each layer, as the last heal check saw

    @classmethod
    def open(cls, key: PrivateKey, *, host: str, port: int, trackers: tuple[str, ...], listen: bool,
             p2p: dict[str, Any], emit: Callable[[Event], None], advertise: str = "",
             advertise_host: str = "", tls_dir: Path | None = None, data_dir: Path | None = None,
             lan_interfaces: tuple[str, ...] = (), lan_service: str = "",
             invites: tuple[str, ...] = ()) -> NetworkService:
        """A P2P node for ``key`` with the ``[p2p]`` settings (checked here), and its service.
        ``advertise_host``: the host others dial (the ``advertise_host`` setting); by default the
        bound one, or for a node bound to every interface its address on this network.
        ``lan_interfaces`` / ``lan_service`` override where LAN discovery advertises and under which
        service type (tests: 127.0.0.1 and a type of their own); ``[p2p] lan_discovery`` turns it off."""
        config = p2p_config_from(p2p)
        node = P2PNode(key, host=host, port=port, trackers=list(trackers), listen=listen,
                       config=config, advertise=advertise, advertise_host=advertise_host, tls_dir=tls_dir,
                       data_dir=data_dir, on_punch=lambda o: emit(_hole_punched(o)))
        lan = None
        if config.lan_discovery:
            lan = LanDiscovery(node, interfaces=lan_interfaces, service_type=lan_service or SERVICE_TYPE)
        return cls(node, trackers=trackers, emit=emit, lan=lan, invites=invites)

    def apply_caps(self, caps: UsageCaps) -> None:
        """The volunteer's upload/download caps on tensor streams, live (subscribe this to the
        engine's ``ctx.usage``; streams in flight slow down or speed up within a quarter second)."""
        self.node.bandwidth.set_rates(caps.upload_bytes_per_s, caps.download_bytes_per_s)

    def set_replicas(self, replicas: tuple[int, ...]) -> None:
        if replicas != self.replicas:
            self.replicas = replicas
            self._emit_network(len(self.known))

    def _emit_network(self, peers: int) -> None:
        self.emit(NetworkChanged(reachable=not self.solo, relay=self.node.relay_address, peers=peers,
                                 phase=phase_for(peers + 1), replicas_per_layer=self.replicas))

    @property
    def node_id(self) -> str:
        return self.node.node_id.hex()

    def serve(self, *, stage: Any = None, sync: Any = None, weights: Any = None, data: Any = None,
              inference: Any = None) -> None:
        """Answer these requests with these handlers from now on (the P2P node's handler types;
        a handler not given stays as it is)."""
        if stage is not None:
            self.node.set_stage_handler(stage)
        if sync is not None:
            self.node.set_sync_handler(sync)
        if weights is not None:
            self.node.set_weights_handler(weights)
        if data is not None:
            self.node.set_data_handler(data)
        if inference is not None:
            self.node.set_inference_handler(inference)

    async def announce(self, layer_range: tuple[int, int], *, tier: str, layers_fit: int) -> None:
        """Announce that this node holds ``layer_range`` (refreshed by the heartbeat until replaced)."""
        if not self.node.address and not self.node.relay_address:
            # --no-listen with no relay yet (a solo genesis node has no peer to relay through):
            # nobody could dial the holder we would announce, so there is nothing to announce.
            log.info("not announcing layers: this node accepts no connections and has no relay")
            return
        first, last = layer_range
        await self.node.registry.announce(LayerAnnouncement(first, last, tier=tier, capacity=float(layers_fit),
                                                            ttl=self.node.config.heartbeat_timeout_s))

    async def holders_from(self, layer: int) -> list[PeerRecord]:
        """Announced holders of a stage that starts at ``layer``."""
        return [r for r in await self.node.who_holds(layer) if r.layer_start == layer]

    async def live_drivers(self) -> set[str]:
        """Node ids of the drivers currently announced (holders of a stage starting at layer 0)."""
        return {r.node_id.hex() for r in await self.holders_from(0)}

    @property
    def solo(self) -> bool:
        """No tracker answered (or none configured), no invited node answered and no peer was found
        on this network: this node is the whole network. It stops being solo when LAN discovery
        finds a peer later on."""
        tracked = bool(self.trackers) and self.node.tracker_client.reachable
        return not tracked and not self.invited and not (self.lan is not None and self.lan.verified)

    @property
    def may_find_peers(self) -> bool:
        """Peers may still appear while this node runs: LAN discovery is looking (a lone node
        keeps healing and upgrades wired for the network it may become)."""
        return self.lan is not None and self.lan.active

    async def start(self, tier: str, layers_fit: int, memory_bytes: int = 0) -> None:
        self.node.set_offer(tier=tier, capacity=float(layers_fit), memory=memory_bytes)
        await self.node.start()
        await self._join_invited()
        lan = self.lan
        looking = lan is not None and await lan.start()  # False when it cannot; describe() says why
        if lan is not None and looking and self.solo and self.node.config.lan_wait_s > 0:
            log.info("no tracker answered; looking for peers on this network for up to %.0f s",
                     self.node.config.lan_wait_s)
            found = await lan.wait_for_peer(self.node.config.lan_wait_s)
            log.info("%s", "found a peer on this network" if found else
                     "no peer on this network yet: starting a network of our own")
        self._watch = asyncio.ensure_future(self._watch_peers())
        self._first_test = asyncio.ensure_future(self.test_reachability())

    async def _join_invited(self) -> None:
        """Dial each invited node pinned to the id its code names, and join the DHT through those
        that prove it (as through a tracker's list)."""
        for invite in self.invites:
            try:
                record = await self.node.ping(invite.dial)
            except P2PError as exc:
                log.warning("the invited node at %s:%d did not answer as itself: %s", invite.host, invite.port, exc)
                continue
            if record.node_id == invite.node_id:  # a pinned channel ensures it; fail closed anyway
                self.invited[record.node_id] = record
        if self.invited:
            await self.node.dht.bootstrap(list(self.invited.values()))

    async def test_reachability(self) -> Reachability:
        """Run the reachability self-test now (p2p/reachability.py); the UI hears the result."""
        lan_peers = len(self.lan.verified) if self.lan is not None else 0
        result = await self_test(self.node, lan_peers=lan_peers)
        self.reachability = result
        self.emit(ReachabilityTested(verdict=result.verdict, address=result.address, observed=result.observed,
                                     relay=result.relay, port=result.port, lan_peers=result.lan_peers,
                                     trackers_answered=result.trackers_answered))
        return result

    async def stop(self) -> None:
        for task in (self._watch, self._first_test):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self.lan is not None:
            await self.lan.stop()
        await self.node.stop()

    async def peers(self) -> list[PeerRecord]:
        """Every node we know of (tracker lists merged with the DHT's table), ourselves excluded."""
        found: dict[bytes, PeerRecord] = {r.node_id: r for r in self.node.peers()}
        for tracker in self.trackers:
            try:
                listed = await self.node.tracker_client.peers(tracker)
            except P2PError:
                continue
            for record in listed:
                if record.node_id not in found and record.node_id != self.node.node_id:
                    self.node.dht.observe(record)  # a node that joined before us learns of later ones
                found[record.node_id] = record
        found.pop(self.node.node_id, None)
        return list(found.values())

    async def _watch_peers(self) -> None:
        first = True  # the first look is always reported, so "no peers" is said, not left unsaid
        while True:
            try:
                current = {r.node_id: r for r in await self.peers()}
            except Exception:  # never let the watcher die: it only feeds the UI
                log.exception("peer watch failed")
                current = dict(self.known)
            for node_id in current.keys() - self.known.keys():
                r = current[node_id]
                self.emit(PeerJoined(node_id=node_id.hex(), address=r.dial, tier=r.tier,
                                     layers=(r.layer_start, r.layer_end), latency_ms=r.latency_ms or 0.0))
            for node_id in self.known.keys() - current.keys():
                self.emit(PeerLeft(node_id=node_id.hex()))
            changed = first or current.keys() != self.known.keys()
            first = False
            self.known = current
            if changed:
                self._emit_network(len(current))
            await asyncio.sleep(PEER_WATCH_INTERVAL_S)


def _hole_punched(outcome: PunchOutcome) -> HolePunched:
    return HolePunched(peer=outcome.peer.hex(), direct=outcome.direct, attempts=outcome.attempts,
                       seconds=outcome.seconds, address=outcome.address, reason=outcome.reason)


def phase_for(nodes: int) -> str:
    """Scale phases of seed 001 (DESIGN.md §4)."""
    for limit, name in ((1, "genesis"), (4, "micro"), (19, "small"), (99, "medium"), (499, "growing")):
        if nodes <= limit:
            return name
    return "large"


def load_identity(config: Any) -> PrivateKey:
    """The node's identity (app/node/identity.py); an ephemeral key until that module exists."""
    try:
        from app.node.identity import load_node_key
    except ModuleNotFoundError:
        log.warning("app.node.identity is missing: using an ephemeral node key for this run")
        return PrivateKey.generate()
    return load_node_key(config)
