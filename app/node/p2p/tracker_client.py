"""A node's side of the trackers: register (dial-back), heartbeats, and finding a relay.

Every tracker given is used: the node registers with each and merges their peer lists, so one
tracker being down changes nothing. When none can dial the node back (or it does not listen),
it opens a tunnel to a reachable peer and registers again advertising that relay (NAT).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from app.node.p2p import upnp
from app.node.p2p.addresses import is_unspecified
from app.node.p2p.auth import sign_message
from app.node.p2p.errors import P2PError, PeerUnavailable
from app.node.p2p.protocol import PROTOCOL_VERSION, pb2
from app.node.p2p.records import InvalidRecord, PeerRecord, parse_peer_record
from app.node.p2p.tracker import HEARTBEAT, PEERS, REGISTER

if TYPE_CHECKING:
    from app.node.p2p.node import P2PNode

log = logging.getLogger(__name__)


def _parse(raws: list[bytes]) -> list[PeerRecord]:
    out = []
    for raw in raws:
        try:
            out.append(parse_peer_record(raw))
        except InvalidRecord:
            continue
    return out


class TrackerClient:
    def __init__(self, node: P2PNode) -> None:
        self.node = node
        self.reachable = False
        self.observed_host = ""

    async def register(self, tracker: str) -> list[PeerRecord]:
        answer = await self._register(tracker)
        self.reachable = self.reachable or answer.reachable
        return _parse(list(answer.peers))

    async def _register(self, tracker: str) -> Any:
        """The tracker's RegisterResponse (it dialled our record's address back); notes the host it
        saw us come from."""
        record = self.node.record()
        if record is None:
            raise PeerUnavailable("this node has neither an address nor a relay to register")
        request = pb2.RegisterRequest(protocol_version=PROTOCOL_VERSION, record=record.raw)
        sign_message(self.node.key, REGISTER, request, b"")  # a tracker is dialled by address
        answer = await self.node.client.unary(tracker, REGISTER, request, self.node.config.rpc_timeout_s)
        self.observed_host = answer.observed_host[:64] or self.observed_host
        return answer

    async def peers(self, tracker: str) -> list[PeerRecord]:
        request = pb2.PeersRequest(protocol_version=PROTOCOL_VERSION)
        answer = await self.node.client.unary(tracker, PEERS, request, self.node.config.rpc_timeout_s)
        return _parse(list(answer.peers))

    async def join(self) -> list[PeerRecord]:
        """Register everywhere (via a relay when needed) and bootstrap the DHT from the answers."""
        found: dict[bytes, PeerRecord] = {}
        answered = False
        for tracker in self.node.trackers:
            try:
                got = await (self.register(tracker) if self.node.listen else self.peers(tracker))
            except P2PError as exc:
                log.warning("tracker %s unavailable: %s", tracker, exc)
                continue
            answered = True
            found.update((r.node_id, r) for r in got if r.node_id != self.node.node_id)
        peers = list(found.values())
        if self.node.listen and answered:
            await self._try_observed_address()
        if self.node.listen and answered and not self.reachable and self.node.config.use_upnp:
            await self.try_upnp()
        if peers and not self.reachable:
            await self.find_relay(peers)
            for tracker in self.node.trackers:
                try:
                    await self.register(tracker)
                except P2PError as exc:
                    log.warning("tracker %s refused the relayed registration: %s", tracker, exc)
        await self.node.dht.bootstrap(peers)
        return peers

    async def _try_observed_address(self) -> bool:
        """A node bound to every interface (0.0.0.0) does not know its public address: try the
        one the tracker saw us come from (a public server, or NAT with the port forwarded)."""
        if self.node.advertise or not is_unspecified(self.node.host) or not self.observed_host:
            return False
        if self.node.local_host == self.observed_host:
            return self.reachable  # the tracker sees us where we already said we are
        lan_reachable = self.reachable  # our address on this network, dialled back before
        self.node.advertise = f"{self.observed_host}:{self.node.port}"
        self.reachable = False
        await self._register_everywhere()
        if not self.reachable:
            self.node.advertise = ""  # back to our address on this network
            if lan_reachable:
                await self._register_everywhere()
        return self.reachable

    async def dial_back(self) -> int:
        """Register again with every tracker and take their fresh verdict on whether they can dial
        us back (the reachability self-test); returns how many answered."""
        answered, reachable = 0, False
        for tracker in self.node.trackers:
            try:
                answer = await self._register(tracker)
            except P2PError as exc:
                log.info("tracker %s unavailable for the reachability test: %s", tracker, exc)
                continue
            answered += 1
            reachable = reachable or answer.reachable
        if answered:
            self.reachable = reachable
        return answered

    async def _register_everywhere(self) -> None:
        for tracker in self.node.trackers:
            try:
                await self.register(tracker)
            except P2PError as exc:
                log.info("tracker %s unavailable: %s", tracker, exc)

    async def try_upnp(self) -> bool:
        """Ask the gateway to forward our port, then let the trackers dial the public address."""
        try:
            mapping = await upnp.map_port(self.node.port, self.node.config.upnp_timeout_s, self.node.config.upnp_ssdp)
        except upnp.UpnpUnavailable as exc:
            log.info("UPnP unavailable (%s); falling back to a relay", exc)
            return False
        self.node.upnp_mapping = mapping
        self.node.advertise = mapping.address
        for tracker in self.node.trackers:
            try:
                await self.register(tracker)
            except P2PError as exc:
                log.warning("tracker %s unavailable: %s", tracker, exc)
        if not self.reachable:
            log.info("UPnP mapped %s but the tracker cannot dial it", mapping.address)
        return self.reachable

    async def find_relay(self, peers: list[PeerRecord]) -> str:
        """Open a tunnel to the first reachable peer that accepts one; returns its address."""
        for peer in peers:
            if not peer.address or peer.node_id == self.node.node_id:
                continue
            try:
                await self.node.tunnel.open(peer.address, self.node.config.rpc_timeout_s, relay_id=peer.node_id)
            except (ConnectionError, P2PError) as exc:
                log.info("peer %s cannot relay for us: %s", peer.address, exc)
                continue
            self.node.relay_address = peer.address
            return peer.address
        raise PeerUnavailable("no reachable peer accepted to relay for this node; "
                              "open the node's port in your router or enable UPnP")

    async def replace_relay(self, peers: list[PeerRecord]) -> str:
        """Our relay went away: tunnel through another reachable peer and tell the trackers."""
        dead = self.node.relay_address
        relay = await self.find_relay([p for p in peers if p.address != dead])
        for tracker in self.node.trackers:
            try:
                await self.register(tracker)
            except P2PError as exc:
                log.info("tracker %s unavailable: %s", tracker, exc)
        return relay

    async def heartbeat(self) -> None:
        for tracker in self.node.trackers:
            request = pb2.HeartbeatRequest(protocol_version=PROTOCOL_VERSION, node_id=self.node.node_id)
            sign_message(self.node.key, HEARTBEAT, request, b"")
            try:
                answer = await self.node.client.unary(tracker, HEARTBEAT, request, self.node.config.rpc_timeout_s)
                if not answer.known:
                    await self.register(tracker)
            except P2PError as exc:
                log.info("tracker %s heartbeat failed: %s", tracker, exc)
