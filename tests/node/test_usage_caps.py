"""Usage caps the engine enforces: the duty-cycle throttle (fake clock), torch threads per
executor worker, SetUsageCaps reaching the runtime, and the choice of CUDA device (no GPU needed)."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
import torch

from app.node.config import ConfigError, NodeConfig, ResourceLimits, UsageCaps
from app.node.engine import NodeEngine
from app.node.events import NodeState, SetUsageCaps, UsageCapsChanged
from app.node.hardware import DeviceInfo, HardwareReport, SpeedTier, choose_cuda_device
from app.node.runtime_api import RunControl
from app.node.throttle import DutyCycle, MeteredExecutor, default_threads


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def simulate(duty: DutyCycle, clock: FakeClock, units: list[float], *, outside_idle: float = 0.0) -> float:
    """Run units the way the node does: wait what is owed, compute, repeat; returns busy fraction."""
    start = clock.now
    for work in units:
        clock.now += duty.wait_s()
        duty.begin()
        clock.now += work
        duty.end()
        clock.now += outside_idle  # e.g. waiting for a peer: counts towards what is owed
    return sum(units) / (clock.now - start)


@pytest.mark.parametrize("share", [1.0, 0.75, 0.5, 0.25, 0.05])
def test_busy_fraction_over_many_units_matches_the_share(share: float) -> None:
    clock = FakeClock()
    duty = DutyCycle(share, clock=clock)
    rng = random.Random(7)
    units = [rng.uniform(0.01, 2.0) for _ in range(500)]
    fraction = simulate(duty, clock, units)
    # The last unit's idle time is not yet spent, so the fraction sits a hair above the share.
    assert fraction == pytest.approx(share, rel=0.02)
    assert duty.busy_total == pytest.approx(sum(units))


def test_idle_time_spent_elsewhere_is_not_owed_twice() -> None:
    clock = FakeClock()
    duty = DutyCycle(0.5, clock=clock)
    # A unit of 1 s followed by 3 s of waiting for peers: already idle longer than owed.
    fraction = simulate(duty, clock, [1.0] * 100, outside_idle=3.0)
    assert fraction == pytest.approx(0.25, rel=0.01)


def test_overlapping_units_count_once() -> None:
    clock = FakeClock()
    duty = DutyCycle(0.5, clock=clock)
    duty.begin()
    clock.now += 1.0
    duty.begin()  # a second job joins the busy period: no wait while another unit runs
    assert duty.wait_s() == 0
    clock.now += 1.0
    duty.end()
    duty.end()
    assert duty.busy_total == pytest.approx(2.0)
    assert duty.wait_s() == pytest.approx(2.0)  # busy 2 s of wall-clock at 50 %: 2 s idle


def test_changing_the_share_rescales_what_is_owed() -> None:
    clock = FakeClock()
    duty = DutyCycle(0.25, clock=clock)
    duty.charge(1.0)  # owes 3 s at 25 %
    assert duty.wait_s() == pytest.approx(3.0)
    clock.now += 1.0
    duty.set_share(0.5)  # 2 s left at 25 % -> 2/3 s left at 50 %
    assert duty.wait_s() == pytest.approx(2.0 / 3.0)
    duty.set_share(1.0)  # the volunteer left: nothing owed
    assert duty.wait_s() == 0


def test_release_stops_throttling_for_good() -> None:
    clock = FakeClock()
    duty = DutyCycle(0.05, clock=clock)
    duty.charge(10.0)
    assert duty.wait_s() > 100
    duty.release()
    duty.charge(10.0)
    assert duty.wait_s() == 0


def test_bad_shares_and_charges_are_refused() -> None:
    with pytest.raises(ValueError):
        DutyCycle(0.0)
    with pytest.raises(ValueError):
        DutyCycle(0.5).set_share(1.5)
    with pytest.raises(ValueError):
        DutyCycle(0.5).charge(-1.0)
    with pytest.raises(RuntimeError):
        DutyCycle().end()


def test_proceed_waits_out_the_owed_idle_time_and_a_stop_ends_the_wait() -> None:
    clock = FakeClock()
    duty = DutyCycle(0.5, clock=clock)

    async def main() -> None:
        control = RunControl(duty)
        duty.charge(5.0)  # 5 s owed on the fake clock
        waiting = asyncio.ensure_future(control.proceed())
        await asyncio.sleep(0.6)  # real time passes, the fake clock does not: still owed
        assert not waiting.done()
        clock.now += 5.0
        assert await asyncio.wait_for(waiting, 60) is True
        duty.charge(5.0)
        waiting = asyncio.ensure_future(control.proceed())
        await asyncio.sleep(0.05)
        control.request_stop()  # stopping must not wait for the share
        assert await asyncio.wait_for(waiting, 60) is False

    asyncio.run(main())


def test_held_says_when_work_waits_at_the_pause_gate() -> None:
    async def main() -> None:
        control = RunControl()
        assert await control.proceed() is True and not control.held  # running: the gate is open
        control.pause()
        assert not control.held  # paused, but nobody reached the gate yet (a step in flight)
        waiting = [asyncio.ensure_future(control.proceed()) for _ in range(2)]  # two micro-batches
        await asyncio.wait_for(_until(lambda: control.held), 60)
        assert not any(w.done() for w in waiting)
        control.resume()
        assert await asyncio.wait_for(asyncio.gather(*waiting), 60) == [True, True]
        assert not control.held
        control.pause()
        stopped = asyncio.ensure_future(control.proceed())
        await asyncio.wait_for(_until(lambda: control.held), 60)
        control.request_stop()  # a stop opens the gate: the caller winds down
        assert await asyncio.wait_for(stopped, 60) is False and not control.held

    asyncio.run(main())


async def _until(condition) -> None:  # noqa: ANN001
    while not condition():
        await asyncio.sleep(0)


def _wait_until(condition, what: str, timeout: float = 120.0) -> None:  # noqa: ANN001
    """Wait for a condition of the engine; ``timeout`` only catches a hang (a loaded machine measuring
    its hardware or importing torch takes longer, and still passes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def test_the_executor_meters_its_jobs_and_sets_torch_threads_per_worker() -> None:
    before = torch.get_num_threads()
    executor = MeteredExecutor(1, DutyCycle(1.0), thread_name_prefix="test-metered")
    try:
        executor.set_threads(1)
        assert executor.submit(torch.get_num_threads).result(30) == 1
        executor.set_threads(2)  # the same worker thread picks up the new count before its next job
        assert executor.submit(torch.get_num_threads).result(30) == 2
        executor.submit(time.sleep, 0.01).result(30)
        assert executor.duty.busy_total > 0
    finally:
        executor.release()
        executor.shutdown(wait=True)
        executor.restore_threads()
    assert torch.get_num_threads() == before


def test_the_executor_holds_a_job_back_while_idle_is_owed() -> None:
    clock = FakeClock()
    duty = DutyCycle(0.5, clock=clock)
    executor = MeteredExecutor(1, duty)
    try:
        duty.charge(10.0)
        started = threading.Event()
        future = executor.submit(started.set)
        assert not started.wait(0.6)  # owed 10 s on the fake clock: the job has not started
        clock.now += 10.0
        future.result(5)
        assert started.is_set()
    finally:
        executor.release()
        executor.shutdown(wait=True)


# --- the engine --------------------------------------------------------------------------------

class CapsRuntime:
    """A real runtime that does its work in the executor and reports what torch saw there."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.steps_done = 0
        self.seen_caps: list[UsageCaps] = []
        ctx.usage.subscribe(self.seen_caps.append)

    async def run(self) -> int:
        self.ctx.set_state(NodeState.TRAINING, "")
        while await self.ctx.control.proceed():
            await self.ctx.loop.run_in_executor(self.ctx.executor, time.sleep, 0.005)
            self.steps_done += 1
            if not await self.ctx.control.sleep(0.02):
                break
        return 0

    async def handle(self, command):
        return await self.ctx.loop.run_in_executor(self.ctx.executor, torch.get_num_threads)

    async def shutdown(self) -> None:
        pass


@pytest.fixture
def cpu_hardware(monkeypatch):
    report = HardwareReport(DeviceInfo("cpu", "test", 2**33, 2**33, 2), 300.0, SpeedTier.T4, "x", 0.0)
    monkeypatch.setattr("app.node.hardware.measure_or_cached", lambda *a, **k: report)
    return report


def test_set_usage_caps_reaches_the_runtime_and_changes_torch_threads(tmp_path, cpu_hardware) -> None:
    from app.node.events import Query

    limits = ResourceLimits(cpu_threads=2, cpu_share=0.9)
    runtimes: list[CapsRuntime] = []
    engine = NodeEngine(NodeConfig(data_dir=tmp_path, limits=limits),
                        runtime_factory=lambda ctx: runtimes.append(CapsRuntime(ctx)) or runtimes[-1])
    events: list[UsageCapsChanged] = []
    engine.subscribe(lambda e: events.append(e) if isinstance(e, UsageCapsChanged) else None)
    before = torch.get_num_threads()
    engine.start()
    try:
        _wait_until(lambda: runtimes, "the runtime was built")
        # The idle caps of the config are in force from the start, published with what they mean.
        assert events[0].caps == limits.caps(in_use=False) and events[0].threads == 2
        assert events[-1].share == 0.9 and events[-1].device == "cpu"
        assert engine.call(Query(what="threads")) == 2

        in_use = UsageCaps(cpu_threads=1, cpu_share=0.5, upload_bytes_per_s=1 << 20)
        changed = engine.call(SetUsageCaps(caps=in_use))
        assert isinstance(changed, UsageCapsChanged) and changed.threads == 1 and changed.share == 0.5
        assert runtimes[0].seen_caps[-1] == in_use  # the runtime's subscribers (bandwidth) heard it
        assert runtimes[0].ctx.control.duty.share == 0.5
        assert engine.call(Query(what="threads")) == 1  # torch in the workers now uses one thread
        assert engine.latest("usage_caps") == changed

        with pytest.raises(ConfigError, match="cpu_share"):
            engine.call(SetUsageCaps(caps=UsageCaps(cpu_share=2.0)))
        assert runtimes[0].ctx.usage.caps == in_use  # a bad set changes nothing
    finally:
        assert engine.stop(10)
    assert torch.get_num_threads() == before


def test_gpu_share_applies_on_a_gpu_device(tmp_path, monkeypatch) -> None:
    report = HardwareReport(DeviceInfo("mps", "Apple GPU", 2**33, 2**33, 8), 20.0, SpeedTier.T2, "x", 0.0)
    monkeypatch.setattr("app.node.hardware.measure_or_cached", lambda *a, **k: report)
    limits = ResourceLimits(cpu_share=0.9, gpu_share=0.3)
    engine = NodeEngine(NodeConfig(data_dir=tmp_path, limits=limits), runtime_factory=CapsRuntime)
    engine.start()
    try:
        _wait_until(lambda: engine.state is NodeState.TRAINING, "the node trains")
        event = engine.latest("usage_caps")
        assert event is not None and event.device == "mps" and event.share == 0.3
    finally:
        assert engine.stop(10)


def test_default_threads_leave_one_core() -> None:
    assert default_threads(8) == 7
    assert default_threads(1) == 1


# --- which GPU ---------------------------------------------------------------------------------

def test_gpu_ids_pick_the_first_listed_device() -> None:
    assert choose_cuda_device((2, 0), 4) == 2
    assert choose_cuda_device((), 4) == 0
    assert choose_cuda_device((), 0) is None


def test_gpu_ids_torch_cannot_see_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sees 2 CUDA device"):
        choose_cuda_device((1, 5), 2)
    with pytest.raises(ConfigError, match="no CUDA device"):
        choose_cuda_device((0,), 0)
    with pytest.raises(ConfigError):
        choose_cuda_device((-1,), 2)


def test_detect_device_honours_gpu_ids_only_for_cuda() -> None:
    from app.node.hardware import detect_device

    assert detect_device("cpu", (3,)).device == "cpu"  # a CPU node ignores the GPU list
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError):
            detect_device("auto", (0,))


def test_the_network_follows_the_caps_hub_live() -> None:
    """The wiring node_runtime uses: ``ctx.usage.subscribe(net.apply_caps)``."""
    from app.crypto.keys import PrivateKey
    from app.node.runtime.network import NetworkService
    from app.node.usage import UsageCapsHub

    hub = UsageCapsHub(UsageCaps(upload_bytes_per_s=1 << 20))
    net = NetworkService.open(PrivateKey.generate(), host="127.0.0.1", port=0, trackers=(), listen=False, p2p={},
                              emit=lambda event: None)
    hub.subscribe(net.apply_caps)
    assert net.node.bandwidth.upload.rate == 1 << 20 and net.node.bandwidth.download.rate is None
    hub.set(UsageCaps(upload_bytes_per_s=None, download_bytes_per_s=256 * 1024))
    assert net.node.bandwidth.upload.rate is None and net.node.bandwidth.download.rate == 256 * 1024


def test_detect_device_reports_the_chosen_gpu(monkeypatch) -> None:
    """Without a GPU: torch's CUDA queries answer as on a 4-GPU machine; the node takes card 2."""
    from types import SimpleNamespace

    from app.node.hardware import detect_device

    asked: list[int] = []

    def properties(index: int) -> SimpleNamespace:
        asked.append(index)
        return SimpleNamespace(name=f"GPU {index}", total_memory=(index + 1) * 2**30)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    info = detect_device("auto", (2, 3))
    assert (info.device, info.index, info.name, info.torch_device) == ("cuda", 2, "GPU 2", "cuda:2")
    assert info.memory_bytes == 3 * 2**30 and asked == [2]
    with pytest.raises(ConfigError, match="numbered 0 to 3"):
        detect_device("auto", (4,))


def test_the_real_runtime_paces_its_p2p_streams_with_the_caps_in_force(tmp_path, cpu_hardware) -> None:
    """The node runtime (not a stand-in) hands the engine's caps to its network, live."""
    from app.node.runtime.node_runtime import NodeRuntime

    limits = ResourceLimits(upload_bytes_per_s=4 << 20)
    runtimes: list[NodeRuntime] = []
    config = NodeConfig(data_dir=tmp_path, device="cpu", port=0, devnet=True, training={"model": "tiny"},
                        limits=limits)
    engine = NodeEngine(config, runtime_factory=lambda ctx: runtimes.append(NodeRuntime(ctx)) or runtimes[-1])
    engine.start()
    try:
        _wait_until(lambda: runtimes and runtimes[0].net is not None, "the node's network is up")
        bandwidth = runtimes[0].net.node.bandwidth
        assert bandwidth.upload.rate == 4 << 20 and bandwidth.download.rate is None
        engine.call(SetUsageCaps(caps=UsageCaps(upload_bytes_per_s=1 << 20, download_bytes_per_s=2 << 20)))
        assert bandwidth.upload.rate == 1 << 20 and bandwidth.download.rate == 2 << 20
    finally:
        assert engine.stop(10)
