"""A relay holds a bounded amount of callers' data per tunnel, however fast a stranger sends."""

import asyncio

from app.node.p2p.auth import ReplayGuard
from app.node.p2p.budget import StreamBudget
from app.node.p2p.protocol import METHODS, PROTOCOL_VERSION, pb2
from app.node.p2p.relay import FORWARD_PATH, MAX_TUNNEL_QUEUE, RelayService, _Tunnel
from app.node.p2p.server import CallInfo
from app.node.p2p.services import FORWARD
from tests.p2p.helpers import FAST, run

_MIB = 1 << 20


def test_relay_stops_reading_a_caller_when_the_tunnel_is_backed_up():
    async def scenario():
        relay = RelayService(ReplayGuard(60.0))
        tunnel = relay.tunnels[b"h" * 32] = _Tunnel()  # a hidden node that never reads its tunnel
        sent = 0

        async def frames():
            nonlocal sent
            yield pb2.RelayFrame(protocol_version=PROTOCOL_VERSION, target=b"h" * 32, method=FORWARD)
            for _ in range(64):  # 64 MiB offered
                sent += 1
                yield pb2.RelayFrame(message=bytes(_MIB))

        info = CallInfo(METHODS[FORWARD_PATH], "ipv4:127.0.0.1:1", StreamBudget(FAST))
        call = relay.forward(frames(), info)
        answer = asyncio.ensure_future(anext(call, None))
        for _ in range(200):  # let the pump run as far as it can
            await asyncio.sleep(0)
        assert tunnel.queued <= MAX_TUNNEL_QUEUE + _MIB
        assert sent < 64  # the rest stays with the caller (HTTP/2 flow control on a real stream)
        answer.cancel()
        await asyncio.gather(answer, return_exceptions=True)
        await call.aclose()

    run(scenario())


def test_relay_stops_reading_a_hidden_nodes_answers_that_its_caller_does_not_take():
    """Upward too: a hidden node (a stranger) that streams answers faster than the caller takes
    them fills at most the tunnel's bound in the relay, then the relay stops reading the tunnel;
    once that caller's call ends, what it left behind no longer counts and reading goes on."""
    async def scenario():
        relay = RelayService(ReplayGuard(60.0))
        offered = 0
        more = asyncio.Event()

        async def caller_frames():
            yield pb2.RelayFrame(protocol_version=PROTOCOL_VERSION, target=b"h" * 32, method=FORWARD)
            await asyncio.Event().wait()  # the caller sends nothing more and never reads its answers

        async def tunnel_frames():  # the hidden node: 64 MiB of answers to call 1, then one to call 2
            nonlocal offered
            for _ in range(64):
                offered += 1
                yield pb2.RelayFrame(call_id=1, message=bytes(_MIB))
            await more.wait()
            yield pb2.RelayFrame(call_id=2, message=b"x")

        tunnel = relay.tunnels[b"h" * 32] = _Tunnel()
        info = CallInfo(METHODS[FORWARD_PATH], "ipv4:127.0.0.1:1", StreamBudget(FAST))
        call = relay.forward(caller_frames(), info)
        first = asyncio.ensure_future(anext(call, None))  # opens call 1; the caller takes nothing after
        await asyncio.sleep(0)
        second = asyncio.Queue()
        tunnel.calls[2] = second  # another caller's call on the same tunnel
        reader = asyncio.ensure_future(relay._read_up(tunnel_frames(), tunnel))
        for _ in range(200):
            await asyncio.sleep(0)
        assert tunnel.answers.queued <= MAX_TUNNEL_QUEUE + _MIB + 1
        assert offered < 64  # the rest stays with the hidden node (HTTP/2 flow control on a real stream)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await call.aclose()  # call 1 ends: its backlog is dropped
        more.set()
        for _ in range(200):
            await asyncio.sleep(0)
        assert offered == 64 and (await asyncio.wait_for(second.get(), 10)).message == b"x"
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

    run(scenario())
