"""Reachability self-test: can other computers connect to this node, and how.

The node cannot see itself from outside; someone else has to call it. A tracker does: it dials
the address in our signed record back when we register, and answers with the address it saw us
come from (our observed address: the router's public one behind NAT). So the test is, in order:

1. not listening at all, or only on this computer (the volunteer's choice): nothing to test;
2. with trackers: register again and let them dial back the address we advertise — reachable
   directly (or through a port the router opened for us by UPnP, when that mapping is what we
   advertise); when not, ask the router for a mapping (when UPnP is allowed) and test again;
   when still not, the relay through another peer is what remains (tracker_client.find_relay);
3. without a tracker nobody outside can call us back: the result says where the node listens on
   this network and how many computers there found it, and that the internet was not tested.

Peers tell us our observed address too: every ping's answer carries the IP the peer saw us come
from. One peer's word is untrusted, so the address most peers agree on is reported, and only as
an observation (nothing is dialled or advertised because a peer said so).

The verdict is a fixed word; what it means for the volunteer is the UI's (plain_words.py).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.node.p2p.node import P2PNode

log = logging.getLogger(__name__)

VERDICTS = ("not_listening", "this_computer", "local_network", "direct", "upnp", "relay", "unreachable")


@dataclass(frozen=True)
class Reachability:
    verdict: str  # one of VERDICTS
    address: str = ""  # what peers dial now ("" when nothing)
    observed: str = ""  # the host a tracker saw us come from ("" without a tracker answer)
    relay: str = ""  # the peer relaying for us, if any
    port: int = 0  # the port a volunteer would forward on the router
    lan_peers: int = 0  # computers on this network that LAN discovery verified
    trackers_answered: int = 0

    @property
    def reachable(self) -> bool:
        """Others can open a connection to this node, directly or through its relay."""
        return self.verdict in ("local_network", "direct", "upnp", "relay")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def observed_by_peers(node: P2PNode) -> str:
    """The IP most peers saw us come from ('' when none said), ties broken by the lowest address."""
    counts: dict[str, int] = {}
    for host in node.observed_by.values():
        counts[host] = counts.get(host, 0) + 1
    return min(counts, key=lambda h: (-counts[h], h)) if counts else ""


async def self_test(node: P2PNode, *, lan_peers: int = 0) -> Reachability:
    """Test how others reach ``node`` now (a started P2PNode); never raises for a peer's failure."""
    if not node.listen or not node.address:
        verdict = "relay" if node.relay_address else "not_listening"
        return Reachability(verdict, relay=node.relay_address, lan_peers=lan_peers)
    base = dict(port=node.port, lan_peers=lan_peers)
    if _loopback(node.local_host) and not node.advertise:
        return Reachability("this_computer", address=node.address, **base)
    if not node.trackers:
        return Reachability("local_network", address=node.address, observed=observed_by_peers(node), **base)
    client = node.tracker_client
    answered = await client.dial_back()
    if answered and not client.reachable and node.config.use_upnp and node.upnp_mapping is None:
        await client.try_upnp()
    found = dict(base, observed=client.observed_host or observed_by_peers(node), relay=node.relay_address,
                 trackers_answered=answered)
    if client.reachable:
        mapped = node.upnp_mapping is not None and node.advertise == node.upnp_mapping.address
        return Reachability("upnp" if mapped else "direct", address=node.address, **found)
    if node.relay_address and node.tunnel.alive:
        return Reachability("relay", address=node.address, **found)
    return Reachability("unreachable", address=node.address, **found)

