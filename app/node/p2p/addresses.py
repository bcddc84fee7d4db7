"""Which of this computer's addresses other computers can dial.

A node bound to every interface (0.0.0.0) must still name one concrete address in its signed
record; "0.0.0.0" dialled by a peer means that peer itself. The address the operating system
would send from towards the rest of the network is the one its peers on this network see.
"""

from __future__ import annotations

import ipaddress
import socket

import ifaddr

UNSPECIFIED = frozenset({"0.0.0.0", "::", ""})

_PROBE = ("10.255.255.255", 1)
"""Any non-local destination works: connecting a UDP socket only asks the kernel for a route and
its source address; no packet is sent."""


def is_unspecified(host: str) -> bool:
    """True for a bind to every interface, which names no address a peer could dial."""
    return host in UNSPECIFIED


def usable(host: str) -> bool:
    """A concrete IPv4 address another computer could dial (not loopback, unspecified or multicast)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.version == 4 and not (ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local)


def primary_address() -> str:
    """This computer's address on its network: the default route's source, else the first usable
    interface address, else '' (no network at all)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(_PROBE)
            host = probe.getsockname()[0]
        except OSError:  # no route (an isolated namespace, no network): look at the interfaces
            host = ""
    if usable(host):
        return host
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and usable(ip.ip):
                return ip.ip
    return ""


def observed_host(peer: str) -> str:
    """The IP in a gRPC peer string (``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``); '' if none."""
    scheme, _, rest = peer.partition(":")
    if scheme not in ("ipv4", "ipv6"):
        return ""
    host = rest.rpartition(":")[0]
    return host if scheme == "ipv4" else host.strip("[]").join("[]")


def reported_host(text: str) -> str:
    """An address a peer says it saw us come from (untrusted): a plain IPv4 address, else ''."""
    if not isinstance(text, str) or len(text) > 15:
        return ""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return ""
