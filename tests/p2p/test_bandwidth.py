"""Upload/download caps on tensor streams: the token bucket on a fake clock, then real streams on
loopback whose pacing sleeps run on that fake clock (no wall-clock assertions)."""

from __future__ import annotations

import asyncio
import heapq

import pytest
import torch

from app.node.p2p.bandwidth import Bandwidth, TokenBucket

from .helpers import double, run, swarm

MIB = 1 << 20


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        await asyncio.sleep(0)


def test_a_long_transfer_holds_the_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket(1 * MIB, clock=t.clock, sleep=t.sleep)

    async def send(chunks: int) -> None:
        for _ in range(chunks):
            await bucket.take(MIB)

    asyncio.run(send(20))
    # 20 MiB at 1 MiB/s: the first second's burst is free, the other 19 are waited for.
    assert t.now == pytest.approx(19.0, abs=0.01)
    assert bucket.taken_total == 20 * MIB


def test_chunks_bigger_than_the_burst_pass_and_are_paid_for() -> None:
    t = FakeTime()
    bucket = TokenBucket(64 * 1024, clock=t.clock, sleep=t.sleep)  # the smallest cap allowed
    asyncio.run(bucket.take(MIB))
    assert t.now == pytest.approx(15.0, abs=0.01)  # 1 MiB at 64 KiB/s with 1 s of burst: 16 - 1


def test_idle_time_refills_only_up_to_the_burst() -> None:
    t = FakeTime()
    bucket = TokenBucket(MIB, clock=t.clock, sleep=t.sleep)
    t.now += 3600  # an hour of silence saves one second of credit, not an hour's
    assert bucket.reserve(MIB) == 0
    assert bucket.reserve(MIB) == pytest.approx(1.0)


def test_unlimited_never_waits_and_lifting_the_cap_forgives_debt() -> None:
    t = FakeTime()
    bucket = TokenBucket(None, clock=t.clock, sleep=t.sleep)
    asyncio.run(bucket.take(100 * MIB))
    assert t.now == 0
    bucket.set_rate(64 * 1024)
    assert bucket.reserve(10 * MIB) > 100
    bucket.set_rate(None)  # the volunteer left: the cap is gone at once
    assert bucket.debt_s() == 0


def test_a_rate_change_applies_to_a_transfer_in_flight() -> None:
    t = FakeTime()
    bucket = TokenBucket(MIB, clock=t.clock, sleep=t.sleep)

    async def main() -> None:
        bucket.reserve(MIB)  # burst spent
        waiter = asyncio.ensure_future(bucket.take(10 * MIB))  # ~10 s at 1 MiB/s
        while t.now < 2.0:
            await asyncio.sleep(0)
        bucket.set_rate(8 * MIB)  # raised mid-wait: the remaining ~8 MiB go 8x faster
        await waiter

    asyncio.run(main())
    assert t.now == pytest.approx(2.0 + 8.0 / 8, abs=0.3)


class VirtualTime:
    """Discrete-event time: sleepers wake in deadline order, and time jumps to the next deadline
    only when every task is blocked, so concurrent sleeps overlap as they would on a real clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + seconds, self._seq, future))
        await future

    async def run(self, work: asyncio.Future[object]) -> None:
        while not work.done():
            for _ in range(20):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            if self._sleepers:
                deadline, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, deadline)
                future.set_result(None)


def test_concurrent_streams_share_one_cap() -> None:
    t = VirtualTime()
    bucket = TokenBucket(MIB, clock=t.clock, sleep=t.sleep)

    async def stream() -> None:
        for _ in range(5):
            await bucket.take(MIB)

    async def main() -> None:
        await t.run(asyncio.ensure_future(asyncio.gather(stream(), stream())))

    asyncio.run(main())
    # Two streams of 5 MiB under one 1 MiB/s cap: 10 MiB take 9 s after the 1 s burst, as one
    # stream of 10 MiB would; two separate caps would have finished in 4 s.
    assert t.now == pytest.approx(9.0, abs=0.3)
    assert bucket.taken_total == 10 * MIB


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(MIB).reserve(-1)


def test_stage_streams_go_through_both_nodes_buckets() -> None:
    """Caller upload -> server download -> server upload -> caller download, byte for byte."""

    async def main() -> None:
        async with swarm(2, tracker=False) as (_, (a, b)):
            b.set_stage_handler(double)
            for node in (a, b):
                node.bandwidth.set_rates(512 * MIB, 512 * MIB)
            x = torch.randn(3 * MIB // 4)  # 3 MiB of float32
            _, out = await a.call_stage(b.address, "forward", {"microbatch": 1}, {"x": x}, timeout=30)
            assert torch.equal(out["y"], x * 2)
            nbytes = x.numel() * 4
            for taken in (a.bandwidth.upload.taken_total, b.bandwidth.download.taken_total,
                          b.bandwidth.upload.taken_total, a.bandwidth.download.taken_total):
                assert nbytes <= taken <= nbytes + 64 * 1024  # payload plus chunk framing

    run(main())


def test_a_capped_transfer_is_paced_on_the_caps_clock() -> None:
    """Real gRPC streams; the buckets' sleeps run on a fake clock, which then says how long the
    transfer took at the cap."""

    async def main() -> None:
        async with swarm(2, tracker=False) as (_, (a, b)):
            b.set_stage_handler(double)
            t = FakeTime()
            a.bandwidth.upload = TokenBucket(MIB, clock=t.clock, sleep=t.sleep)
            x = torch.randn(8 * MIB // 4)  # 8 MiB up at 1 MiB/s
            _, out = await a.call_stage(b.address, "forward", {}, {"x": x}, timeout=60)
            assert torch.equal(out["y"], x * 2)
            assert t.slept == pytest.approx(7.0, abs=0.1)  # 8 chunks, the first on the burst

    run(main())


def test_a_capped_answer_keeps_the_caller_from_failing_over() -> None:
    """The server waits for upload credit with keepalives flowing: no silence is reported."""

    async def main() -> None:
        async with swarm(2, tracker=False) as (_, (a, b)):
            b.set_stage_handler(double)
            b.bandwidth.upload = TokenBucket(2 * MIB, burst=0)  # 1 MiB answer: ~0.5 s of waiting
            silences: list[int] = []
            x = torch.randn(MIB // 4)
            _, out = await a.call_stage_hedged(b.address, "forward", {}, {"x": x}, 30, lambda: silences.append(1))
            assert torch.equal(out["y"], x * 2)
            assert b.bandwidth.upload.taken_total >= MIB
            assert silences == []

    run(main())


def test_bandwidth_sets_both_directions() -> None:
    bw = Bandwidth()
    assert not bw.limited
    bw.set_rates(64 * 1024, None)
    assert bw.upload.rate == 64 * 1024 and bw.download.rate is None and bw.limited


def test_data_shards_served_and_fetched_are_paced_too() -> None:
    async def main() -> None:
        async with swarm(2, tracker=False) as (_, (a, b)):
            shard = bytes(range(256)) * (3 * MIB // 256)  # 3 MiB

            async def on_data(shard_id: str) -> bytes | None:
                return shard

            b.set_data_handler(on_data)
            up, down = FakeTime(), FakeTime()
            b.bandwidth.upload = TokenBucket(MIB, clock=up.clock, sleep=up.sleep)
            a.bandwidth.download = TokenBucket(MIB, clock=down.clock, sleep=down.sleep)
            assert await a.fetch_data(b.address, "genesis-0001", timeout=30) == shard
            assert b.bandwidth.upload.taken_total == len(shard) == a.bandwidth.download.taken_total
            assert up.slept == pytest.approx(2.0, abs=0.1) and down.slept == pytest.approx(2.0, abs=0.1)

    run(main())
