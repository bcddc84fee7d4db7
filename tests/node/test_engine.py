"""The engine's own mechanics: lifecycle, events across threads, commands, clean stop.

The runtime here is a small real one (it counts steps on the loop and in the executor); the
engine's behaviour with the real training runtime is covered in tests/integration.
"""

import asyncio
import threading
import time

import pytest

from app.node.config import NodeConfig
from app.node.engine import EngineError, NodeEngine
from app.node.events import (
    ErrorOccurred,
    FinishStepThenStop,
    NodeState,
    Pause,
    Query,
    Resume,
    RunFinished,
    StatusChanged,
    StepDone,
)
from app.node.hardware import DeviceInfo, HardwareReport, SpeedTier


class CountingRuntime:
    """Steps every 20 ms, doing its 'work' in the executor like the real trainer does."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.steps_done = 0
        self.work_threads: set[str] = set()
        self.shut_down = False

    def _work(self) -> int:
        self.work_threads.add(threading.current_thread().name)
        time.sleep(0.005)
        return 1

    async def run(self) -> int:
        self.ctx.set_state(NodeState.TRAINING, "")
        limit = self.ctx.config.max_steps
        while limit is None or self.steps_done < limit:
            if not await self.ctx.control.proceed():
                break
            self.steps_done += await self.ctx.loop.run_in_executor(self.ctx.executor, self._work)
            self.ctx.emit(StepDone(step=self.steps_done, loss=1.0 / self.steps_done, tokens_per_s=1.0,
                                   tokens_total=self.steps_done))
            if not await self.ctx.control.sleep(0.02):
                break
        return 0

    async def handle(self, command):
        if isinstance(command, Query) and command.what == "steps":
            return self.steps_done
        if isinstance(command, Query) and command.what == "held":
            return self.ctx.control.held  # waiting at the pause gate: no step in flight
        raise ValueError(f"unsupported {command!r}")

    async def shutdown(self) -> None:
        self.shut_down = True


@pytest.fixture
def cached_hardware(tmp_path, monkeypatch):
    report = HardwareReport(DeviceInfo("cpu", "test", 2**33, 2**33, 2), 300.0, SpeedTier.T4, "x", 0.0)
    monkeypatch.setattr("app.node.hardware.measure_or_cached", lambda *a, **k: report)
    return report


def make_engine(tmp_path, max_steps=None):
    runtimes = []

    def factory(ctx):
        runtimes.append(CountingRuntime(ctx))
        return runtimes[-1]

    engine = NodeEngine(NodeConfig(data_dir=tmp_path, max_steps=max_steps), runtime_factory=factory)
    return engine, runtimes


def collect(engine):
    events, threads = [], set()

    def on_event(event):
        events.append(event)
        threads.add(threading.current_thread().name)

    engine.subscribe(on_event)
    return events, threads


def test_engine_runs_to_max_steps_and_reports_lifecycle(tmp_path, cached_hardware) -> None:
    engine, runtimes = make_engine(tmp_path, max_steps=3)
    events, threads = collect(engine)
    engine.start()
    assert engine.wait(60)
    assert engine.exit_code == 0
    states = [e.state for e in events if isinstance(e, StatusChanged)]
    assert states[:4] == [NodeState.STARTING, NodeState.MEASURING, NodeState.JOINING, NodeState.TRAINING]
    assert states[-2:] == [NodeState.STOPPING, NodeState.STOPPED]
    assert [e.step for e in events if isinstance(e, StepDone)] == [1, 2, 3]
    assert any(isinstance(e, RunFinished) and e.steps == 3 for e in events)
    assert runtimes[0].shut_down
    # Heavy work ran in the executor; events were delivered from engine threads, not the caller's.
    assert all(name.startswith("neuroshard-work") for name in runtimes[0].work_threads)
    assert threading.current_thread().name not in threads
    assert engine.stop() is True


def _until(condition, timeout: float = 60.0) -> None:  # noqa: ANN001
    """Wait for a condition (an event), not for a time budget: ``timeout`` only catches a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the engine never got there"
        time.sleep(0.01)


def test_stop_ends_everything(tmp_path, cached_hardware) -> None:
    """The 5 s stop promise is the engine's own bound (it gives the runtime 4 s to shut down);
    a loaded machine must not fail this test, so the wait here only catches a hang."""
    engine, runtimes = make_engine(tmp_path)
    engine.start()
    _until(lambda: engine.latest("step") is not None)
    assert engine.stop(timeout=60.0)
    assert runtimes[0].shut_down
    assert engine.state is NodeState.STOPPED
    assert not any(t.name.startswith("neuroshard-engine") and t.is_alive() for t in threading.enumerate())


def test_pause_holds_training_and_resume_continues(tmp_path, cached_hardware) -> None:
    engine, runtimes = make_engine(tmp_path)
    engine.start()
    _until(lambda: engine.latest("step") is not None)
    assert engine.call(Pause()) is True
    _until(lambda: engine.call(Query("held")))  # the step in flight landed; the runtime waits at the gate
    paused_at = engine.call(Query("steps"))
    time.sleep(0.3)  # nothing may happen meanwhile, however fast or slow the machine
    assert engine.call(Query("steps")) == paused_at
    engine.call(Resume())
    _until(lambda: engine.call(Query("steps")) > paused_at)
    engine.stop()


def test_finish_step_then_stop_ends_the_run(tmp_path, cached_hardware) -> None:
    engine, _ = make_engine(tmp_path)
    engine.start()
    while engine.latest("step") is None:
        time.sleep(0.01)
    engine.call(FinishStepThenStop())
    assert engine.wait(60) and engine.exit_code == 0
    engine.stop()


def test_failing_command_reaches_the_caller_as_an_exception(tmp_path, cached_hardware) -> None:
    engine, _ = make_engine(tmp_path)
    engine.start()
    while engine.latest("step") is None:
        time.sleep(0.01)
    with pytest.raises(ValueError, match="unsupported"):
        engine.call(Query("nonsense"))
    engine.stop()


def test_broken_subscriber_does_not_stop_the_node(tmp_path, cached_hardware) -> None:
    engine, _ = make_engine(tmp_path, max_steps=2)
    engine.subscribe(lambda event: 1 / 0)
    events, _ = collect(engine)
    engine.start()
    assert engine.wait(60) and engine.exit_code == 0
    assert sum(isinstance(e, StepDone) for e in events) == 2


def test_runtime_crash_becomes_a_fatal_error_event(tmp_path, cached_hardware) -> None:
    def factory(ctx):
        raise RuntimeError("layer download failed")

    engine = NodeEngine(NodeConfig(data_dir=tmp_path), runtime_factory=factory)
    events, _ = collect(engine)
    engine.start()
    assert engine.wait(60)
    assert engine.exit_code == 1
    errors = [e for e in events if e.kind == "error"]
    assert errors and errors[0].fatal and "layer download failed" in errors[0].message
    assert engine.state is NodeState.STOPPED
    engine.stop()


def test_calling_from_the_loop_thread_is_refused(tmp_path, cached_hardware) -> None:
    engine, _ = make_engine(tmp_path, max_steps=1)
    seen: list[BaseException] = []

    def on_event(event):
        if isinstance(event, StepDone) and threading.current_thread().name == "neuroshard-engine":
            try:
                engine.post(Query("steps"))
            except EngineError as exc:
                seen.append(exc)

    engine.subscribe(on_event)
    engine.start()
    assert engine.wait(60)
    engine.stop()
    assert seen and "deadlock" in str(seen[0])


class LeakingCancelRuntime(CountingRuntime):
    """Its work awaits a future that some other party cancelled (a call to a peer that died)."""

    async def run(self) -> int:
        self.ctx.set_state(NodeState.TRAINING, "")
        doomed = asyncio.get_running_loop().create_future()
        doomed.cancel()
        await doomed  # raises CancelledError although nobody cancelled the engine's task
        return 0


def test_a_cancelled_error_nobody_asked_for_is_a_failure_not_a_clean_stop(tmp_path, cached_hardware) -> None:
    engine = NodeEngine(NodeConfig(data_dir=tmp_path, max_steps=3), runtime_factory=LeakingCancelRuntime)
    events, _ = collect(engine)
    engine.start()
    assert engine.wait(60)
    assert engine.exit_code == 1
    fatal = [e for e in events if isinstance(e, ErrorOccurred) and e.fatal]
    assert fatal and "cancelled although no stop was requested" in fatal[-1].message
