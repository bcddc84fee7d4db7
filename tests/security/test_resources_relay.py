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
