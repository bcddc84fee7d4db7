"""Hole punching: upgrade a relayed peer to a direct TCP path (the DCUtR scheme of libp2p).

When this node calls a hidden peer through its relay, it tries once, in the background, to reach
it directly. Over the relayed ``Punch.Connect`` stream the initiator sends CONNECT with its
candidate addresses (signed for the peer) and starts a clock; the peer answers CONNECT with its
own candidates and its TLS certificate (signed for us); the round trip measured is the relayed
RTT. The initiator sends SYNC and waits half that RTT; the peer dials on receiving SYNC, so both
SYNs leave at about the same instant (holepunch_net.py explains why that gets through two NATs).

On a connection the initiator pins a gRPC channel on the certificate the peer sent, which must be
validly bound to the peer's node key (tls.py), and pings it over the direct path: only if the
server at the other end proves that identity in TLS do calls to the peer move off the relay.
The peer splices every punched connection into its own gRPC server, so it authenticates calls
exactly as it does any other. Attempts are bounded (``punch_attempts``); after the last fails,
the peer stays on the relay and is not tried again for ``punch_retry_after_s``. Each outcome,
success or failure with its reason, is reported once (``on_outcome``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from app.crypto.keys import PrivateKey
from app.node.p2p.aio import cancel_and_wait
from app.node.p2p.auth import ReplayGuard, sign_message, verify_message
from app.node.p2p.client import PeerClient, Route
from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import P2PError, PeerRejected, RpcRefusal
from app.node.p2p.holepunch_net import (
    InvalidCandidate,
    PunchPort,
    format_address,
    own_candidates,
    parse_candidates,
    splice,
)
from app.node.p2p.protocol import PROTOCOL_VERSION, is_compatible, pb2
from app.node.p2p.server import CallInfo, Dispatcher
from app.node.p2p.tls import MAX_CERT_BYTES, TlsIdentity, TlsIdentityError, bound_node_id

log = logging.getLogger(__name__)

PUNCH = "/neuroshard.v1.Punch/Connect"
CONNECT, SYNC = 1, 2
MAX_ANSWERING = 8
"""Punches this node answers at once: each holds a port and dials for ``punch_window_s``."""
MAX_PUNCHING = 4
"""Upgrades this node tries at once; relayed calls to further peers wait for a later call."""
MAX_DIRECT_PATHS = 64
"""Punched paths this node keeps open (two sockets and a splice each); past it peers stay relayed."""
MAX_SPLICES = 64
"""Direct connections spliced into our server at once (peers that punched to us)."""
_MAX_RTT_S = 5.0
"""A relayed round trip longer than this gives no useful timing: the attempt fails instead."""
PING = "/neuroshard.v1.Dht/Ping"


@dataclass(frozen=True)
class PunchOutcome:
    """How one upgrade of a relayed peer ended: ``direct`` with the peer address dialled, or
    not with the reason of the last attempt. ``seconds`` runs from the first CONNECT to the
    direct path's first answered call (or to giving up)."""

    peer: bytes
    direct: bool
    attempts: int
    seconds: float
    address: str = ""
    reason: str = ""


class PunchFailed(Exception):
    """One attempt did not produce a verified direct path; the message says why. ``final``: the
    peer refused for a reason another attempt would not change (it does not punch at all)."""

    def __init__(self, reason: str, *, final: bool = False) -> None:
        super().__init__(reason)
        self.final = final


_FINAL_REFUSALS = frozenset({grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.FAILED_PRECONDITION,
                             grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED})


class HolePuncher:
    """Both roles of hole punching for one node: initiator towards relayed peers, and the
    answering side of ``Punch.Connect`` (served directly or through our relay tunnel)."""

    def __init__(self, key: PrivateKey, client: PeerClient, config: P2PConfig, replay: ReplayGuard,
                 tls: TlsIdentity, *, local_host: str, server_address: Callable[[], tuple[str, int] | None],
                 lan_host: Callable[[], str] | None = None,
                 observed_host: Callable[[], str],
                 on_outcome: Callable[[PunchOutcome], None] | None = None) -> None:
        self.key, self.client, self.config, self.replay, self.tls = key, client, config, replay, tls
        self.local_host = local_host  # bound by punch ports, as the gRPC server is
        self.lan_host = lan_host or (lambda: local_host)  # offered to peers on our network
        self.server_address = server_address
        self.observed_host = observed_host
        self.on_outcome = on_outcome
        self.outcomes: list[PunchOutcome] = []
        self._busy: set[bytes] = set()
        self._resting: dict[bytes, float] = {}  # peer -> monotonic time it may be tried again
        self._answering: dict[bytes, asyncio.Task[Any]] = {}  # caller -> its punch being answered
        self._splices = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def install(self, dispatcher: Dispatcher) -> None:
        dispatcher.register(PUNCH, self.answer)
        self.client.on_relayed = self.want

    async def close(self) -> None:
        tasks, self._tasks = list(self._tasks), set()
        await cancel_and_wait(tasks)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def in_progress(self) -> frozenset[bytes]:
        """Peers an upgrade is being tried towards right now."""
        return frozenset(self._busy)

    @property
    def _loopback(self) -> bool:
        host = self.lan_host()
        return host.startswith("127.") or host == "::1"

    # ------------------------------------------------------------------ initiator
    def want(self, route: Route) -> None:
        """A call to ``route.target`` goes through a relay: try a direct path, unless one is
        being tried, it failed recently, or this node has nothing to offer (no server)."""
        peer = route.target
        if peer in self._busy or peer in self.client.direct or self.server_address() is None:
            return
        if len(self._busy) >= MAX_PUNCHING or len(self.client.direct) >= MAX_DIRECT_PATHS:
            return
        if self._resting.get(peer, 0.0) > time.monotonic():
            return
        self._busy.add(peer)
        self._spawn(self._upgrade(route))

    async def upgrade(self, route: Route) -> PunchOutcome:
        """Try to reach ``route.target`` directly now (bounded attempts); the outcome is also
        reported to ``on_outcome``."""
        self._busy.add(route.target)
        return await self._upgrade(route)

    async def _upgrade(self, route: Route) -> PunchOutcome:
        peer, start = route.target, time.monotonic()
        reason, attempt = "", 0
        try:
            for attempt in range(1, self.config.punch_attempts + 1):
                try:
                    address = await self._attempt(route, attempt)
                except PunchFailed as exc:
                    reason = str(exc)
                    log.info("hole punch to %s, attempt %d: %s", peer.hex()[:16], attempt, reason)
                    if exc.final:
                        break
                    continue
                return self._report(PunchOutcome(peer, True, attempt, time.monotonic() - start, address))
            self._resting[peer] = time.monotonic() + self.config.punch_retry_after_s
            return self._report(PunchOutcome(peer, False, attempt, time.monotonic() - start, reason=reason))
        finally:
            self._busy.discard(peer)

    def _report(self, outcome: PunchOutcome) -> PunchOutcome:
        self.outcomes.append(outcome)
        del self.outcomes[:-64]
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    async def _attempt(self, route: Route, attempt: int) -> str:
        peer = route.target
        try:
            port = PunchPort(self.local_host)
        except OSError as exc:
            raise PunchFailed(f"no local port to punch from: {exc}") from None
        try:
            ours = own_candidates(self.observed_host(), self.lan_host(), port.port)
            if not ours:
                raise PunchFailed("this node knows no address of its own to offer (no tracker told it)")
            cert, targets, rtt = await self._exchange(route, ours, attempt)
            await asyncio.sleep(rtt / 2)
            chosen: list[socket.socket] = []

            def first_only(sock: socket.socket) -> bool:
                chosen.append(sock)
                return False  # the initiator talks over one connection; the rest are closed

            await port.meet(targets, self.config.punch_window_s, first_only)
        finally:
            port.close()
        if not chosen:
            raise PunchFailed(f"no direct connection within {self.config.punch_window_s:g} s: "
                              + ", ".join(f"{format_address(*t)}: {port.why(t)}" for t in targets))
        sock = chosen[0]
        try:
            remote = format_address(*sock.getpeername()[:2])
            bridge, abandon = await self._bridge(peer, sock)
        except OSError as exc:
            sock.close()
            raise PunchFailed(f"the direct connection broke at once: {exc}") from None
        try:
            self.client.adopt(bridge, cert, peer)
            request = pb2.PingRequest(protocol_version=PROTOCOL_VERSION)
            await self.client.unary(Route(bridge, expect=peer), PING, request, self.config.rpc_timeout_s)
        except P2PError as exc:
            abandon()
            await self.client.forget(bridge)  # a channel that came ends its splice, which closes the socket
            raise PunchFailed(f"connected to {remote} but TLS or the first call failed there: {exc}") from None
        self.client.direct[peer] = bridge
        return remote

    async def _exchange(self, route: Route, ours: list[str], attempt: int,
                        ) -> tuple[bytes, list[tuple[str, int]], float]:
        """CONNECT both ways and SYNC through the relay: the peer's certificate, its candidates
        and the relayed round-trip time."""
        outgoing: asyncio.Queue[Any] = asyncio.Queue()
        hello = pb2.PunchMessage(protocol_version=PROTOCOL_VERSION, type=CONNECT, addresses=ours, attempt=attempt)
        sign_message(self.key, PUNCH, hello, route.target)
        outgoing.put_nowait(hello)

        async def requests() -> AsyncIterator[Any]:
            while (item := await outgoing.get()) is not None:
                yield item

        timeout = self.config.rpc_timeout_s
        answers = self.client.stream(route, PUNCH, requests(), timeout=timeout + self.config.punch_window_s)
        started = time.monotonic()
        try:
            try:
                async with asyncio.timeout(timeout):
                    answer = await anext(answers, None)
            except (P2PError, asyncio.TimeoutError) as exc:
                final = isinstance(exc, PeerRejected) and exc.code in _FINAL_REFUSALS
                raise PunchFailed(f"the relayed CONNECT got no answer: {exc or 'timeout'}", final=final) from None
            rtt = time.monotonic() - started
            cert, targets = self._check_answer(answer, route.target)
            if rtt > _MAX_RTT_S:
                raise PunchFailed(f"relayed round trip {rtt:.1f} s is too slow to time a simultaneous open")
        except BaseException:
            outgoing.put_nowait(None)
            await answers.aclose()
            raise
        outgoing.put_nowait(pb2.PunchMessage(protocol_version=PROTOCOL_VERSION, type=SYNC, attempt=attempt))
        outgoing.put_nowait(None)
        self._spawn(_drain(answers, timeout))
        return cert, targets, rtt

    def _check_answer(self, answer: Any, peer: bytes) -> tuple[bytes, list[tuple[str, int]]]:
        if answer is None or not is_compatible(answer.protocol_version) or answer.type != CONNECT:
            raise PunchFailed("the peer did not answer CONNECT")
        try:
            verified = verify_message(PUNCH, answer, self.replay)
        except RpcRefusal as exc:
            raise PunchFailed(f"the answer is not validly signed: {exc.reason}") from None
        if verified.node_id != peer:
            raise PunchFailed("the answer is signed by another node than the one called")
        if not answer.certificate or len(answer.certificate) > MAX_CERT_BYTES:
            raise PunchFailed("the answer carries no usable certificate")
        try:
            bound = bound_node_id(bytes(answer.certificate))
        except TlsIdentityError as exc:
            raise PunchFailed(f"the peer's certificate is not usable: {exc}") from None
        if bound != peer:
            raise PunchFailed("the peer's certificate is bound to another node")
        try:
            targets = parse_candidates(list(answer.addresses), allow_loopback=self._loopback)
        except InvalidCandidate as exc:
            raise PunchFailed(f"the peer offered no address to dial: {exc}") from None
        return bytes(answer.certificate), targets

    async def _bridge(self, peer: bytes, sock: socket.socket) -> tuple[str, Callable[[], None]]:
        """A one-shot listener on loopback whose first connection is spliced to ``sock``; the
        direct path ends (and calls go back to the relay) when that splice ends. Returns its
        address and a function that closes listener and socket if no connection came yet."""
        taken = asyncio.Event()

        async def carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await splice((reader, writer), sock)
            finally:
                self._path_closed(peer, address)

        def on_local(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if taken.is_set():
                writer.close()
                return
            taken.set()
            server.close()
            self._spawn(carry(reader, writer))  # ours to cancel at close, not the server's

        server = await asyncio.start_server(on_local, "127.0.0.1", 0)
        address = format_address("127.0.0.1", server.sockets[0].getsockname()[1])

        def abandon() -> None:
            if not taken.is_set():
                taken.set()
                server.close()
                sock.close()

        return address, abandon

    async def drop(self, peer: bytes) -> None:
        """Close the direct path to ``peer``, if any: its calls go through the relay again."""
        address = self.client.direct.pop(peer, None)
        if address is not None:
            await self.client.forget(address)  # closing the channel ends the splice and the socket

    def _path_closed(self, peer: bytes, address: str) -> None:
        if self.client.direct.get(peer) == address:
            del self.client.direct[peer]
            log.info("direct path to %s closed: calls go through its relay again", peer.hex()[:16])
        self._spawn(self.client.forget(address))

    # ------------------------------------------------------------------ answering side
    async def answer(self, requests: AsyncIterator[Any], info: CallInfo) -> AsyncIterator[Any]:
        """``Punch.Connect``: answer a signed CONNECT, then dial on SYNC and splice what connects."""
        hello = await anext(requests, None)
        if hello is None or not is_compatible(hello.protocol_version) or hello.type != CONNECT:
            raise RpcRefusal(grpc.StatusCode.INVALID_ARGUMENT, "a punch starts with CONNECT")
        caller = verify_message(PUNCH, hello, self.replay).node_id
        if self.server_address() is None:
            raise RpcRefusal(grpc.StatusCode.FAILED_PRECONDITION, "this node serves no direct connections")
        previous = self._answering.pop(caller, None)
        if previous is not None:
            previous.cancel()  # the caller's next attempt supersedes its last (splices made stay)
        if len(self._answering) >= MAX_ANSWERING:
            raise RpcRefusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many hole punches at once")
        try:
            targets = parse_candidates(list(hello.addresses), allow_loopback=self._loopback)
        except InvalidCandidate as exc:
            raise RpcRefusal(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        try:
            port = PunchPort(self.local_host)
        except OSError as exc:
            raise RpcRefusal(grpc.StatusCode.UNAVAILABLE, f"no local port to punch from: {exc}") from None
        me = asyncio.current_task()
        assert me is not None
        self._answering[caller] = me
        handed_over = False
        try:
            reply = pb2.PunchMessage(protocol_version=PROTOCOL_VERSION, type=CONNECT, attempt=hello.attempt,
                                     addresses=own_candidates(self.observed_host(), self.lan_host(), port.port),
                                     certificate=self.tls.cert_der)
            sign_message(self.key, PUNCH, reply, caller)
            yield reply
            async with asyncio.timeout(self.config.rpc_timeout_s):
                sync = await anext(requests, None)
            if sync is None or sync.type != SYNC:
                return
            self._answering[caller] = self._spawn(self._meet_and_serve(caller, port, targets))
            handed_over = True
        finally:
            if not handed_over:
                port.close()
                self._forget_answering(caller)

    async def _meet_and_serve(self, caller: bytes, port: PunchPort, targets: list[tuple[str, int]]) -> None:
        try:
            await port.meet(targets, self.config.punch_window_s, self._serve_connection)
        finally:
            port.close()
            self._forget_answering(caller)

    def _forget_answering(self, caller: bytes) -> None:
        if self._answering.get(caller) in (asyncio.current_task(), None):
            self._answering.pop(caller, None)

    def _serve_connection(self, sock: socket.socket) -> bool:
        if self._splices >= MAX_SPLICES:
            sock.close()
            return False
        self._splices += 1
        self._spawn(self._into_server(sock))
        return True

    async def _into_server(self, sock: socket.socket) -> None:
        try:
            server = self.server_address()
            if server is None:
                sock.close()
                return
            try:
                local = await asyncio.open_connection(*server)
            except OSError:
                sock.close()
                return
            await splice(sock, local)
        finally:
            self._splices -= 1


async def _drain(answers: AsyncIterator[Any], timeout: float) -> None:
    """Let the relayed punch stream finish (the peer ends it after SYNC) without waiting on it."""
    with contextlib.suppress(P2PError, asyncio.TimeoutError):
        async with asyncio.timeout(timeout):
            async for _ in answers:
                pass
