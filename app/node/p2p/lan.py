"""LAN discovery: find other nodes on this network with mDNS/DNS-SD (python-zeroconf).

A node advertises a ``_neuroshard._tcp.local.`` service whose TXT record carries its node id and
TLS fingerprint, and browses for the same service. Nothing in an advertisement is trusted: it is
a hint of where to dial. A discovered peer is dialled at ``<node id>@host:port``, so the TLS
channel must prove that node's identity binding (client.py), and its signed peer record comes
back through the ordinary ping; only then is it handed to the DHT, as a tracker contact would be.

Advertising only makes sense where others can dial us: the node must listen on a concrete
non-loopback address (a node bound to 0.0.0.0 does not know which of its addresses peers can
reach, and its record would name 0.0.0.0). ``interfaces`` names the addresses explicitly, which
is how two nodes on 127.0.0.1 find each other in tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from app.node.p2p.aio import cancel_and_wait
from app.node.p2p.errors import P2PError
from app.node.p2p.node import P2PNode
from app.node.p2p.records import PeerRecord

log = logging.getLogger(__name__)

SERVICE_TYPE = "_neuroshard._tcp.local."
RESOLVE_TIMEOUT_MS = 3000
MAX_PENDING_DIALS = 16
"""Advertisements are free to send: at most this many are being checked at once, the rest wait
for the next announcement (mDNS repeats them)."""
MAX_KNOWN = 256
"""Verified LAN peers remembered; beyond this the DHT's own table is what keeps them."""


def lan_address(host: str) -> str:
    """``host`` when it is a concrete non-loopback IPv4 address others on the LAN can dial, else ''."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ""
    if ip.version != 4 or ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        return ""
    return host


def local_networks(addresses: Sequence[str]) -> tuple[ipaddress.IPv4Network, ...]:
    """The IPv4 networks of our interfaces that carry ``addresses`` (a /32 each when unknown)."""
    wanted = set(addresses)
    found = {a: ipaddress.IPv4Network(f"{ip.ip}/{ip.network_prefix}", strict=False)
             for adapter in ifaddr.get_adapters() for ip in adapter.ips
             if isinstance(ip.ip, str) and (a := ip.ip) in wanted}
    return tuple(found.get(a, ipaddress.IPv4Network(f"{a}/32")) for a in addresses)


def on_networks(host: str, networks: Sequence[ipaddress.IPv4Network]) -> bool:
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def parse_txt(properties: dict[bytes, bytes | None]) -> tuple[bytes, bytes] | None:
    """(node id, TLS fingerprint) from an advertisement's TXT record, or None when malformed."""
    try:
        node_id = bytes.fromhex((properties.get(b"id") or b"").decode("ascii"))
        tls = bytes.fromhex((properties.get(b"tls") or b"").decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if len(node_id) != 32 or len(tls) not in (0, 32):
        return None
    return node_id, tls


class LanDiscovery:
    def __init__(self, node: P2PNode, *, interfaces: Sequence[str] = (), service_type: str = SERVICE_TYPE,
                 on_peer: Callable[[PeerRecord], None] | None = None) -> None:
        """Around a P2P node that is started before ``start``. ``interfaces``: the IPv4 addresses to
        advertise and browse on (empty: the node's own host, when it is a LAN address)."""
        self.node = node
        self.interfaces = tuple(interfaces)
        self.service_type = service_type
        self.on_peer = on_peer
        self.verified: dict[bytes, PeerRecord] = {}
        self.rejected: dict[str, str] = {}  # advertisement name -> why it was not used (last MAX_KNOWN)
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._checking: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed = ""  # why start could not open mDNS, when it could not
        self._networks: tuple[ipaddress.IPv4Network, ...] = ()
        self._found: asyncio.Event | None = None  # set once the first peer is verified (wait_for_peer)

    @property
    def active(self) -> bool:
        return self._zc is not None

    def describe(self) -> str:
        """In a few words: where discovery looks, or why it does not."""
        if self.active:
            return "looking on " + ", ".join(self.addresses())
        if self._failed:
            return f"off: {self._failed}"
        if not self.node.address:
            return "off: this node accepts no connections"
        return f"off: the node listens on {self.node.address}, which no other computer can dial"

    def addresses(self) -> tuple[str, ...]:
        """Where we advertise and browse; empty when the node cannot be dialled on the LAN."""
        if not self.node.address:
            return ()
        if self.interfaces:
            return self.interfaces
        host = lan_address(self.node.local_host)
        return (host,) if host else ()

    async def start(self) -> bool:
        """Advertise and browse; False (and a log line saying why) when there is nowhere to."""
        addresses = self.addresses()
        if not addresses:
            log.info("LAN discovery off: the node listens on %s, which no other computer can dial",
                     self.node.address or "nothing")
            return False
        self._loop = asyncio.get_running_loop()
        self._found = asyncio.Event()
        if self.verified:
            self._found.set()
        try:
            zc = AsyncZeroconf(interfaces=list(addresses), ip_version=IPVersion.V4Only)
        except OSError as exc:  # no multicast on that interface: the node works on without it
            self._failed = f"mDNS could not start on {', '.join(addresses)} ({exc.strerror or exc})"
            log.warning("LAN discovery %s", self._failed)
            return False
        self._zc = zc
        self._networks = local_networks(addresses)
        node_hex = self.node.node_id.hex()
        self._info = AsyncServiceInfo(
            self.service_type, f"{node_hex[:32]}.{self.service_type}",
            addresses=[socket.inet_aton(a) for a in addresses], port=self.node.port,
            properties={"id": node_hex, "tls": self.node.tls.fingerprint.hex()},
            server=f"neuroshard-{node_hex[:16]}.local.")
        await self._zc.async_register_service(self._info)
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, [self.service_type], handlers=[self._on_change])
        log.info("LAN discovery on %s", ", ".join(addresses))
        return True

    async def wait_for_peer(self, timeout_s: float) -> bool:
        """Wait until the first peer on this network is verified, at most ``timeout_s``; True when one
        was. A node with no tracker gives discovery this long before it starts a network of its own."""
        if self._found is None or self._zc is None:
            return bool(self.verified)
        try:
            async with asyncio.timeout(timeout_s):
                await self._found.wait()
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Withdraw the advertisement and stop browsing; safe to call twice."""
        zc, self._zc = self._zc, None
        checks, self._checking = list(self._checking.values()), {}
        await cancel_and_wait(checks)
        if zc is None:
            return
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._info is not None:
            await zc.async_unregister_service(self._info)
            self._info = None
        await zc.async_close()

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed or self._loop is None:
            return  # a peer that left is noticed by the DHT, which stops hearing from it
        # zeroconf may call from its own thread: hand over to our loop before touching state
        self._loop.call_soon_threadsafe(self._spawn, name)

    def _spawn(self, name: str) -> None:
        if self._zc is None or name in self._checking or len(self._checking) >= MAX_PENDING_DIALS:
            return
        task = asyncio.ensure_future(self._check(name))
        self._checking[name] = task
        task.add_done_callback(lambda _t, n=name: self._checking.pop(n, None))

    async def _check(self, name: str) -> None:
        """Resolve an advertisement, dial it pinned to the id it claims, and learn its signed record."""
        zc = self._zc
        if zc is None:
            return
        info = AsyncServiceInfo(self.service_type, name)
        if not await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT_MS):
            return
        claim = parse_txt(info.properties)
        if claim is None or not info.port:
            self._reject(name, "malformed TXT record or no port")
            return
        node_id, _tls = claim
        # The TXT fingerprint is not compared: the certificate's binding, checked by the pinned
        # dial, is what proves the node; a fingerprint would only go stale when it renews.
        known = self.verified.get(node_id)
        # an advertisement may name any address: dial only those on the networks we listen on,
        # so a stranger on the LAN cannot turn us into a prober of other hosts
        hosts = [h for h in info.parsed_addresses(IPVersion.V4Only) if on_networks(h, self._networks)]
        if node_id == self.node.node_id or (known is not None and known.address in
                                            {f"{h}:{info.port}" for h in hosts}):
            return  # ourselves, or a peer already checked at this address
        why = "no IPv4 address on this network"
        for host in hosts:
            try:
                record = await self.node.ping(f"{node_id.hex()}@{host}:{info.port}")
            except P2PError as exc:
                why = f"{host}:{info.port}: {exc}"
                continue
            if record.node_id != node_id:
                why = "answered with another node's record"  # a pinned channel prevents it; fail closed
                continue
            await self._learn(record)
            return
        self._reject(name, why)

    def _reject(self, name: str, why: str) -> None:
        log.info("LAN advertisement %s not used: %s", name, why)
        self.rejected[name] = why
        while len(self.rejected) > MAX_KNOWN:
            self.rejected.pop(next(iter(self.rejected)))

    async def _learn(self, record: PeerRecord) -> None:
        if len(self.verified) < MAX_KNOWN:
            self.verified[record.node_id] = record
        log.info("found LAN peer %s at %s", record.node_id.hex()[:12], record.dial)
        try:
            await self.node.dht.bootstrap([record])  # join through it, as through a tracker's list
        except P2PError as exc:
            log.info("DHT bootstrap through LAN peer %s failed: %s", record.node_id.hex()[:12], exc)
        if self._found is not None:  # after the bootstrap: a waiting planner sees the peer's stages
            self._found.set()
        if self.on_peer is not None:
            self.on_peer(record)
