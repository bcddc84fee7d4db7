"""Oversized, too many and stalled tensor streams are refused with a status; memory stays bounded.

The issue's attack: four streams that each declare 4 GiB, send 256 MiB and stall. Each refusal
must be its own status with a reason, the target's memory must stay under a stated bound, and
the target must keep serving.
"""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import torch

from app.crypto.keys import PrivateKey
from app.node.p2p.auth import sign_message
from app.node.p2p.client import PeerClient, Route
from app.node.p2p.config import MIB, P2PConfig
from app.node.p2p.errors import PeerRejected, PeerUnavailable, RequestTimeout
from app.node.p2p.node import P2PNode
from app.node.p2p.protocol import pb2
from app.node.p2p.services import FORWARD
from app.node.p2p.stats import TrafficStats
from app.node.p2p.tensor_codec import build_header
from app.node.p2p.wire import encode_data
from tests.p2p.helpers import FAST, double, run, swarm

ROOT = Path(__file__).resolve().parents[2]
_CHUNK = encode_data(bytes(MIB))  # one pre-encoded 1 MiB data chunk, sent again and again


def _header(key: PrivateKey, declared: int, recipient: bytes) -> pb2.StreamHeader:
    """A signed forward header declaring one float32 tensor of ``declared`` bytes."""
    header, _ = build_header("forward", {"microbatch": 1}, {"x": torch.ones(1)})
    del header.tensors[:]
    header.tensors.add(name="x", dtype="float32", shape=[declared // 4])
    header.total_bytes = declared
    sign_message(key, FORWARD, header, recipient)
    return header


async def _attack(client: PeerClient, target: Route, declared: int, send_mib: int, release: asyncio.Event,
                  polite: bool = True, timeout: float = 60.0) -> grpc.StatusCode:
    """One stream that declares ``declared`` bytes, sends ``send_mib`` MiB and stalls; returns
    the status it ended with. A polite attacker waits for the target's first answer (accepted or
    refused) before sending data; an eager one sends at once, as call_tensors does, and may then
    see its refusal as a torn-down stream (UNAVAILABLE) rather than the status."""
    accepted = asyncio.Event()

    async def requests() -> AsyncIterator[object]:
        yield pb2.TensorChunk(header=_header(PrivateKey.generate(), declared, target.expect))
        if polite:
            await accepted.wait()
        for _ in range(send_mib):
            yield _CHUNK
        await release.wait()  # stall: neither more data nor the end of the stream

    try:
        async for _ in client.stream(target, FORWARD, requests(), timeout):
            accepted.set()
    except PeerRejected as exc:
        return exc.code
    except RequestTimeout:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    except PeerUnavailable:
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.OK


def _route(node: P2PNode) -> Route:
    return Route(node.address, expect=node.node_id)


def test_declared_size_over_the_hard_cap_is_refused_before_any_byte_is_buffered():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (target, other)):
            target.set_stage_handler(double)
            release = asyncio.Event()
            codes = await asyncio.gather(*(_attack(other.client, _route(target), 4096 * MIB, 16, release)
                                           for _ in range(4)))
            assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 4
            assert target.dispatcher.budget.total_bytes == 0
            _, out = await other.call_stage(target.address, "forward", {}, {"x": torch.ones(3)}, 5)
            assert torch.equal(out["y"], torch.full((3,), 2.0))

    run(scenario())


def test_streams_and_bytes_in_flight_per_peer_are_capped():
    # A stall cut-off of its own length must not free the two held streams before the third one is
    # checked (with 0.5 s it could, on a loaded machine): they stay until the test releases them.
    config = P2PConfig(**{**FAST.__dict__, "max_streams_per_peer": 2, "max_inflight_bytes_per_peer": 64 * MIB,
                          "max_inflight_bytes": 96 * MIB, "stream_stall_timeout_s": 300.0})

    async def scenario():
        async with swarm(2, config=config, tracker=False) as (_, (target, other)):
            target.set_stage_handler(double)
            release = asyncio.Event()
            budget = target.dispatcher.budget
            held = [asyncio.ensure_future(_attack(other.client, _route(target), 8 * MIB, 1, release))
                    for _ in range(2)]
            while budget.total_bytes < 16 * MIB:  # both admitted and stalled
                await asyncio.sleep(0.01)
            assert await _attack(other.client, _route(target), 8 * MIB, 0, release) == \
                grpc.StatusCode.RESOURCE_EXHAUSTED  # a third stream from the same peer
            # bytes in flight: a second peer (its own channel) declaring past the per-peer cap
            stranger = PeerClient(config, TrafficStats())
            try:
                assert await _attack(stranger, _route(target), 65 * MIB, 0, release) == \
                    grpc.StatusCode.RESOURCE_EXHAUSTED
            finally:
                await stranger.close()
            release.set()  # the held streams end short of what they declared
            assert grpc.StatusCode.OK not in await asyncio.gather(*held)
            assert budget.total_bytes == 0  # released however they ended
            _, out = await other.call_stage(target.address, "forward", {}, {"x": torch.ones(2)}, 60)
            assert torch.equal(out["y"], torch.full((2,), 2.0))

    run(scenario())


def test_a_stalled_stream_ends_with_deadline_exceeded_and_releases_its_bytes():
    config = P2PConfig(**{**FAST.__dict__, "stream_stall_timeout_s": 0.5})

    async def scenario():
        async with swarm(2, config=config, tracker=False) as (_, (target, other)):
            target.set_stage_handler(double)
            release = asyncio.Event()  # never set: the stream stalls after its first MiB
            budget = target.dispatcher.budget
            assert await _attack(other.client, _route(target), 8 * MIB, 1, release) == \
                grpc.StatusCode.DEADLINE_EXCEEDED
            assert budget.total_bytes == 0
            _, out = await other.call_stage(target.address, "forward", {}, {"x": torch.ones(2)}, 60)
            assert torch.equal(out["y"], torch.full((2,), 2.0))

    run(scenario())


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_target_memory_stays_under_its_bound_under_the_four_stalled_streams_attack():
    """Bound: the peak RSS grows by at most ``max_inflight_bytes`` + 128 MiB (gRPC's and TLS's
    buffers, the chunks read while draining refused streams, allocator slack) over the RSS after
    a warm-up call, whatever the attackers declare or send. Measured here: +138 MiB against the
    224 MiB bound (issue 13 measured 1.5 GiB for the uncapped attack)."""
    caps = {"max_stream_bytes": 48 * MIB, "max_inflight_bytes_per_peer": 48 * MIB, "max_inflight_bytes": 96 * MIB,
            "stream_stall_timeout_s": 1.0}
    bound_kib = (caps["max_inflight_bytes"] + 128 * MIB) // 1024
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/security/target_process.py"), json.dumps(caps)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        address, node_hex = proc.stdout.readline().split()

        async def scenario():
            async with swarm(1, tracker=False) as (_, (caller,)):
                target = Route(address, expect=bytes.fromhex(node_hex))
                _, out = await caller.call_stage(target, "forward", {}, {"x": torch.ones(1024)}, 10)  # warm-up
                assert torch.equal(out["y"], torch.full((1024,), 2.0))
                baseline = _rss_kib(proc.pid, "VmRSS")
                release = asyncio.Event()
                clients = [PeerClient(FAST, TrafficStats()) for _ in range(4)]  # four peers, four channels
                try:
                    # the attack: declare 4 GiB, send 256 MiB at once, stall
                    huge = await asyncio.gather(*(_attack(c, target, 4096 * MIB, 256, release, polite=False)
                                                  for c in clients))
                    assert set(huge) <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}, huge
                    # within the hard cap: each declares 40 MiB, sends 32 and stalls; two fit the
                    # node-wide 96 MiB, the other two are refused, the two admitted time out
                    within = await asyncio.gather(*(_attack(c, target, 40 * MIB, 32, release) for c in clients))
                    assert sorted(code.name for code in within) == \
                        ["DEADLINE_EXCEEDED"] * 2 + ["RESOURCE_EXHAUSTED"] * 2, within
                finally:
                    release.set()
                    for client in clients:
                        await client.close()
                peak = _rss_kib(proc.pid, "VmHWM")
                assert peak - baseline < bound_kib, (peak, baseline, bound_kib)
                _, out = await caller.call_stage(target, "forward", {}, {"x": torch.ones(4)}, 10)  # still serving
                assert torch.equal(out["y"], torch.full((4,), 2.0))

        run(scenario(), timeout=120)
    finally:
        proc.kill()
        proc.wait()


def test_a_peer_that_stops_reading_its_answer_is_cut_off_and_its_reservation_released():
    config = P2PConfig(**{**FAST.__dict__, "stream_stall_timeout_s": 0.5})

    async def big_answer(caller, kind, meta, tensors):
        return {}, {"y": torch.zeros(8 * MIB)}  # 32 MiB: far more than the flow-control window

    async def scenario():
        async with swarm(2, config=config, tracker=False) as (_, (target, other)):
            target.set_stage_handler(big_answer)
            header, buffers = build_header("forward", {}, {"x": torch.ones(4)}, digest=False)
            sign_message(other.key, FORWARD, header, target.node_id)
            channel = await other.client.channel(_route(target))
            call = channel.stream_stream(FORWARD, request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=pb2.TensorChunk.FromString)(
                iter([pb2.TensorChunk(header=header), pb2.TensorChunk(data=bytes(buffers[0]))]), timeout=60)
            budget = target.dispatcher.budget
            while budget.total_bytes == 0:  # admitted
                await asyncio.sleep(0.01)
            while budget.total_bytes:  # the answer is never read: cut off after the stall timeout
                await asyncio.sleep(0.05)  # (were it never, run()'s timeout fails the test)
            call.cancel()
            target.set_stage_handler(double)
            _, out = await other.call_stage(target.address, "forward", {}, {"x": torch.ones(2)}, 5)
            assert torch.equal(out["y"], torch.full((2,), 2.0))

    run(scenario())
