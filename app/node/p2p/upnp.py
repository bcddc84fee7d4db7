"""UPnP IGD port mapping: ask the home router to forward a public TCP port to this node.

Discovery is SSDP (an M-SEARCH datagram to 239.255.255.250:1900, UPnP Device Architecture 1.1
§1.3); the router answers with the URL of its device description, which names the control URL of
its WANIPConnection (or WANPPPConnection) service; AddPortMapping / GetExternalIPAddress /
DeletePortMapping are SOAP calls to it (IGD:1 WANIPConnection §2.4). Everything a router sends is
size-capped and parsed strictly; any failure raises :class:`UpnpUnavailable` so the node falls
back to a relay. Blocking I/O runs in a worker thread with a timeout.
"""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass

SSDP_ADDRESS = "239.255.255.250:1900"
SERVICE_TYPES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
MAX_RESPONSE = 64 * 1024
LEASE_S = 3600
"""One-hour leases, renewed at half-life, so a crashed node's mapping disappears by itself."""
DESCRIPTION = "NeuroShard node"


class UpnpUnavailable(OSError):
    """No UPnP gateway answered, or it refused the mapping; use a relay instead."""


@dataclass(frozen=True)
class Mapping:
    control_url: str
    service_type: str
    external_ip: str
    external_port: int
    internal_port: int

    @property
    def address(self) -> str:
        return f"{self.external_ip}:{self.external_port}"


def _discover(ssdp: str, timeout: float) -> str:
    host, port = ssdp.rsplit(":", 1)
    query = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n"
             b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query, (host, int(port)))
        try:
            data, _ = sock.recvfrom(4096)
        except OSError as exc:
            raise UpnpUnavailable(f"no UPnP gateway answered SSDP discovery: {exc}") from None
    match = re.search(rb"^location:\s*(\S+)\s*$", data, re.IGNORECASE | re.MULTILINE)
    if not match:
        raise UpnpUnavailable("SSDP answer carries no LOCATION")
    location = match.group(1).decode("ascii", "replace")
    if urllib.parse.urlsplit(location).scheme != "http":
        raise UpnpUnavailable("gateway description URL is not http")
    return location


def _fetch(request: urllib.request.Request | str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http only, checked
            body = response.read(MAX_RESPONSE + 1)
    except OSError as exc:
        raise UpnpUnavailable(f"gateway request failed: {exc}") from None
    if len(body) > MAX_RESPONSE:
        raise UpnpUnavailable("gateway answer too large")
    return body


def _control_url(location: str, timeout: float) -> tuple[str, str]:
    try:
        root = ET.fromstring(_fetch(location, timeout))
    except ET.ParseError as exc:
        raise UpnpUnavailable(f"gateway description is not XML: {exc}") from None
    for wanted in SERVICE_TYPES:
        for service in root.iter():
            if service.tag.endswith("}service") or service.tag == "service":
                fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in service}
                if fields.get("serviceType") == wanted and fields.get("controlURL"):
                    return urllib.parse.urljoin(location, fields["controlURL"]), wanted
    raise UpnpUnavailable("gateway offers no WANIPConnection service")


def _soap(control_url: str, service: str, action: str, args: dict[str, str], timeout: float) -> dict[str, str]:
    body = "".join(f"<{k}>{_escape(v)}</{k}>" for k, v in args.items())
    envelope = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        f'<u:{action} xmlns:u="{service}">{body}</u:{action}></s:Body></s:Envelope>').encode()
    request = urllib.request.Request(control_url, data=envelope, method="POST", headers={
        "Content-Type": 'text/xml; charset="utf-8"', "SOAPAction": f'"{service}#{action}"'})
    try:
        root = ET.fromstring(_fetch(request, timeout))
    except ET.ParseError as exc:
        raise UpnpUnavailable(f"gateway SOAP answer is not XML: {exc}") from None
    return {el.tag.rsplit("}", 1)[-1]: (el.text or "").strip() for el in root.iter()}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _local_ip_towards(url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, 1))  # no packet is sent: this only picks the outgoing interface
        return sock.getsockname()[0]


def _map(internal_port: int, timeout: float, ssdp: str) -> Mapping:
    control, service = _control_url(_discover(ssdp, timeout), timeout)
    _soap(control, service, "AddPortMapping", {
        "NewRemoteHost": "", "NewExternalPort": str(internal_port), "NewProtocol": "TCP",
        "NewInternalPort": str(internal_port), "NewInternalClient": _local_ip_towards(control),
        "NewEnabled": "1", "NewPortMappingDescription": DESCRIPTION, "NewLeaseDuration": str(LEASE_S),
    }, timeout)
    external = _soap(control, service, "GetExternalIPAddress", {}, timeout).get("NewExternalIPAddress", "")
    try:
        socket.inet_aton(external)
    except OSError:
        raise UpnpUnavailable(f"gateway reported no usable external address ({external[:40]!r})") from None
    return Mapping(control, service, external, internal_port, internal_port)


async def map_port(internal_port: int, timeout: float = 2.0, ssdp: str = SSDP_ADDRESS) -> Mapping:
    """Map TCP ``internal_port`` on the gateway to the same external port; raises UpnpUnavailable."""
    return await asyncio.to_thread(_map, internal_port, timeout, ssdp)


async def unmap_port(mapping: Mapping, timeout: float = 2.0) -> None:
    await asyncio.to_thread(_soap, mapping.control_url, mapping.service_type, "DeletePortMapping", {
        "NewRemoteHost": "", "NewExternalPort": str(mapping.external_port), "NewProtocol": "TCP"}, timeout)
