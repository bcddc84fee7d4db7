"""The socket half of hole punching: candidate addresses, the simultaneous open, byte splices.

A punch uses one *punch port* per attempt: a TCP socket bound with SO_REUSEADDR/SO_REUSEPORT to
the node's host, listening, from which every outgoing SYN is sent too. Through a port-preserving
NAT (endpoint-independent mapping that keeps the source port: Linux MASQUERADE, most home
routers) the port others must dial is then the observed IP with that same port. Both sides dial
at once; each NAT lets the other's SYN in because its own SYN to that address just went out
(RFC 5382 REQ-4: a NAT must not answer an unsolicited SYN, so the early one is dropped, not
refused). Whichever way the handshake completes (a simultaneous open of two SYN_SENT sockets, or a
SYN that finds the listener when no NAT is in between) both sides end with one TCP connection.

A fresh port per attempt (not the gRPC listening port) keeps the listener's SO_REUSEPORT off, so a
second node on a taken port still fails loudly, and a re-punch to the same peer never meets its
old connection's TIME_WAIT.

gRPC for Python cannot serve or dial over a socket it did not open, so the punched connection is
spliced: on the answering side into its own gRPC server, on the initiating side to a one-shot
listener on 127.0.0.1 that a pinned TLS channel dials. TLS runs end to end over the splices.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Sequence

MAX_CANDIDATES = 8
"""Addresses one side may ask the other to dial: a node has a few interfaces, not dozens."""
MAX_ADDRESS_CHARS = 64
_RETRY_REFUSED_S = 0.05
"""Pause before re-sending a SYN that a (non RFC 5382) NAT or host refused with a reset."""
MAX_REFUSED_RETRIES = 40
"""SYNs one candidate gets per attempt: bounds what a lying peer can make us send to a third party."""
SPLICE_CHUNK = 256 * 1024


class InvalidCandidate(ValueError):
    """An address a peer offered that we will not dial; the message says why."""


def _parse_one(raw: str, allow_loopback: bool) -> tuple[str, int]:
    if not isinstance(raw, str) or len(raw) > MAX_ADDRESS_CHARS:
        raise InvalidCandidate("address too long")
    host, sep, port_text = raw.rpartition(":")
    if not sep or not port_text.isdigit() or len(port_text) > 5:
        raise InvalidCandidate(f"{raw!r} is not ip:port")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise InvalidCandidate(f"{raw!r}: port out of range")
    try:
        ip = ipaddress.ip_address(host.strip("[]") if host.startswith("[") else host)
    except ValueError:
        raise InvalidCandidate(f"{raw!r}: the host must be an IP literal (names are never resolved)") from None
    if isinstance(ip, ipaddress.IPv6Address) and not host.startswith("["):
        raise InvalidCandidate(f"{raw!r}: an IPv6 host is written in brackets")
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise InvalidCandidate(f"{raw!r} is not a unicast address")
    if ip.is_loopback and not allow_loopback:
        raise InvalidCandidate(f"{raw!r} is a loopback address of the peer's own machine")
    if ip.is_link_local:
        raise InvalidCandidate(f"{raw!r}: link-local addresses need an interface we cannot know")
    return str(ip), port


def parse_candidates(raw: Sequence[str], *, allow_loopback: bool) -> list[tuple[str, int]]:
    """The peer's candidate addresses as ``(ip, port)``, deduplicated; raises InvalidCandidate
    when there are too many, and drops single bad entries (one odd interface spoils nothing)
    unless none is left. ``allow_loopback`` only when we ourselves are on loopback (tests)."""
    if len(raw) > MAX_CANDIDATES:
        raise InvalidCandidate(f"{len(raw)} candidate addresses, at most {MAX_CANDIDATES} allowed")
    out: list[tuple[str, int]] = []
    reasons: list[str] = []
    for item in raw:
        try:
            parsed = _parse_one(item, allow_loopback)
        except InvalidCandidate as exc:
            reasons.append(str(exc))
            continue
        if parsed not in out:
            out.append(parsed)
    if not out:
        raise InvalidCandidate("no usable candidate address" + (f": {'; '.join(reasons)}" if reasons else ""))
    return out


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def own_candidates(observed_host: str, local_host: str, port: int) -> list[str]:
    """What we offer: the IP a tracker saw us at (our NAT's public side; the port is assumed
    preserved) and our bound address when it is a real one (peers on the same LAN)."""
    out: list[str] = []
    for host in (observed_host.strip("[]"), local_host):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        if ip.is_unspecified:
            continue
        address = format_address(str(ip), port)
        if address not in out:
            out.append(address)
    return out


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _reusable(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class PunchPort:
    """One attempt's local port: a listener plus the dialling sockets, all bound to it."""

    def __init__(self, host: str) -> None:
        self.host = host if host not in ("", "0.0.0.0", "::") else ("::" if host == "::" else "0.0.0.0")
        self.listener = _reusable(self.host, 0)
        self.listener.listen(8)
        self.port: int = self.listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self.refused: dict[tuple[str, int], int] = {}  # target -> SYNs answered with a reset
        self.errors: dict[tuple[str, int], str] = {}  # target -> the last other error dialling it

    def why(self, target: tuple[str, int]) -> str:
        """What dialling ``target`` met, in words (for the failure's reason)."""
        parts = []
        if self.refused.get(target):
            parts.append(f"reset {self.refused[target]}x (a NAT or host answered our SYN with RST)")
        if target in self.errors:
            parts.append(self.errors[target])
        return "; ".join(parts) or "no answer (SYNs dropped, no SYN from the peer arrived)"

    def close(self) -> None:
        for sock in (self.listener, *self._open):
            sock.close()
        self._open.clear()

    async def meet(self, targets: Sequence[tuple[str, int]], window_s: float,
                   on_connection: Callable[[socket.socket], bool]) -> int:
        """Dial every target from this port while accepting on it, for ``window_s``; each
        established connection from a target's IP goes to ``on_connection``, which returns False
        to stop looking. Returns how many connections were handed over."""
        deadline = time.monotonic() + window_s
        found: asyncio.Queue[socket.socket] = asyncio.Queue()
        allowed = {ip for ip, _ in targets}
        tasks = [asyncio.ensure_future(self._dial(t, deadline, found)) for t in targets]
        tasks.append(asyncio.ensure_future(self._accept(allowed, found)))
        handed = 0
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    async with asyncio.timeout(left):
                        sock = await found.get()
                except asyncio.TimeoutError:
                    break
                self._open.discard(sock)
                handed += 1
                if not on_connection(sock):
                    break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            while not found.empty():  # established meanwhile but not wanted
                found.get_nowait().close()
        return handed

    async def _dial(self, target: tuple[str, int], deadline: float, found: asyncio.Queue[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(MAX_REFUSED_RETRIES):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            sock = _reusable(self.host, self.port)
            self._open.add(sock)
            try:
                async with asyncio.timeout(left):
                    await loop.sock_connect(sock, target)
            except ConnectionRefusedError:
                self._drop(sock)
                self.refused[target] = self.refused.get(target, 0) + 1
                await asyncio.sleep(_RETRY_REFUSED_S)
                continue
            except TimeoutError:  # asyncio's timeout is an OSError too: caught before it
                self._drop(sock)
                return
            except asyncio.CancelledError:
                self._drop(sock)
                raise
            except OSError as exc:
                self._drop(sock)
                if exc.errno == errno.EADDRNOTAVAIL:
                    return  # this very 4-tuple is already connected: our listener accepted it
                self.errors[target] = os.strerror(exc.errno) if exc.errno else repr(exc)
                await asyncio.sleep(_RETRY_REFUSED_S)  # unreachable for now: the route may appear
                continue
            found.put_nowait(sock)
            return

    async def _accept(self, allowed: set[str], found: asyncio.Queue[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, peer = await loop.sock_accept(self.listener)
            if str(ipaddress.ip_address(peer[0])) not in allowed:
                sock.close()  # a stranger found the port: only the peer's addresses may come in
                continue
            sock.setblocking(False)
            self._open.add(sock)
            found.put_nowait(sock)

    def _drop(self, sock: socket.socket) -> None:
        self._open.discard(sock)
        sock.close()


async def splice(a: socket.socket | tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 b: socket.socket | tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Copy bytes both ways until both directions ended; then close both ends."""
    ra, wa = a if isinstance(a, tuple) else await asyncio.open_connection(sock=a, limit=SPLICE_CHUNK)
    rb, wb = b if isinstance(b, tuple) else await asyncio.open_connection(sock=b, limit=SPLICE_CHUNK)

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(SPLICE_CHUNK):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:  # reset by one end: the whole path is gone
            for w in (wa, wb):
                w.transport.abort()

    try:
        await asyncio.gather(pump(ra, wb), pump(rb, wa))
    finally:
        for w in (wa, wb):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
