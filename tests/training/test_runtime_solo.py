"""The node runtime in-process: a solo genesis node trains, pauses, reports work, answers queries."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from app.node import hardware
from app.node.config import NodeConfig
from app.node.engine import NodeEngine
from app.node.events import (
    Event,
    LayersAssigned,
    ModesChanged,
    NodeState,
    Pause,
    Query,
    Resume,
    StatusChanged,
    StepDone,
)
from app.node.runtime import create_runtime
from app.node.runtime_api import RuntimeContext
from app.node.training.trainer import StepInfo

TRAINING = {"model": "tiny", "batch_size": 4, "micro_batches": 2, "seq_len": 32, "lr": 3e-3,
            "warmup_steps": 0, "inner_steps": 3, "checkpoint_every": 100, "linger_s": 0.0}


def _config(tmp_path: Path, max_steps: int) -> NodeConfig:
    report = hardware.HardwareReport(hardware.detect_device("cpu"), 20.0, hardware.tier_for_ms(20.0),
                                     torch.__version__, time.time())
    hardware.save_cache(tmp_path, report)
    return NodeConfig(data_dir=tmp_path, port=0, max_steps=max_steps, training=dict(TRAINING))


class _Recorder:
    def __init__(self, *sinks: Callable[[StepInfo], None]) -> None:
        self.events: list[Event] = []
        self.work: list[StepInfo] = []
        self.lock = threading.Lock()
        self.runtime = None
        self.sinks = sinks

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: type) -> list:
        with self.lock:
            return [e for e in self.events if isinstance(e, kind)]

    def factory(self, ctx: RuntimeContext):  # noqa: ANN201
        self.runtime = create_runtime(ctx, step_sinks=(self.work.append, *self.sinks))
        return self.runtime


def _wait_for(predicate, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            pytest.fail("timed out waiting for the node")
        time.sleep(0.05)


def test_max_steps_zero_starts_everything_then_stops_cleanly(tmp_path: Path) -> None:
    rec = _Recorder()
    engine = NodeEngine(_config(tmp_path, 0), runtime_factory=rec.factory)
    engine.subscribe(rec)
    engine.start()
    assert engine.wait(timeout=90) and engine.exit_code == 0
    (layers,) = rec.of(LayersAssigned)
    assert (layers.first_layer, layers.last_layer) == (0, 4) and layers.roles == ("driver", "validator")
    assert not rec.of(StepDone)
    (modes,) = rec.of(ModesChanged)  # the policy of modes.py, fed with this node's measurements
    assert modes.active[0] == "pipeline" and "verify" not in modes.active
    assert dict(modes.unavailable)["verify"] == "needs 100 NEURO staked"


def test_solo_node_trains_pauses_resumes_and_reports_work(tmp_path: Path) -> None:
    first_step, paused = threading.Event(), threading.Event()

    def pause_after_the_first_step(info: StepInfo) -> None:
        # runs in the worker thread that applied the step: the volunteer presses pause right after
        # step 1 however fast or slow this machine is, and step 2 cannot start before it
        if info.step == 0:
            first_step.set()
            assert paused.wait(60), "the test never paused"

    rec = _Recorder(pause_after_the_first_step)
    engine = NodeEngine(_config(tmp_path, 6), runtime_factory=rec.factory)
    engine.subscribe(rec)
    engine.start()
    assert first_step.wait(90), "no first step"
    engine.call(Pause())
    paused.set()
    _wait_for(lambda: any(e.state == NodeState.PAUSED for e in rec.of(StatusChanged)))
    control = rec.runtime.ctx.control
    _wait_for(lambda: control.held)  # step 1 landed; training waits at the gate before step 2
    _wait_for(lambda: len(rec.of(StepDone)) == 1)  # its event may trail the gate by a moment
    status = engine.call(Query("status"))  # the loop answers while paused...
    assert status["layer_range"] == [0, 4] and status["solo"] is True
    ledger = engine.call(Query("ledger"))  # answered by the economy service the runtime wires in
    assert "state_hash" in ledger
    assert control.held and len(rec.of(StepDone)) == 1  # ...and still holds: no step while paused
    assert engine.call(Query("status"))["steps"] == 1
    engine.call(Resume())
    assert engine.wait(timeout=90) and engine.exit_code == 0
    steps = rec.of(StepDone)
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6]
    assert [w.step for w in rec.work] == [0, 1, 2, 3, 4, 5]
    assert all(w.role == "driver+validator" and w.hash_before != w.hash_after for w in rec.work)
    assert all(w.tokens == 4 * 32 and w.layers == (0, 4) for w in rec.work)
    assert (tmp_path / "checkpoints" / "stage.safetensors").exists()


def test_solo_node_that_accepts_no_connections_still_trains(tmp_path: Path) -> None:
    """--no-listen without a tracker: nobody can dial it, so it announces nothing and trains alone."""
    rec = _Recorder()
    config = dataclasses.replace(_config(tmp_path, 2), listen=False)
    engine = NodeEngine(config, runtime_factory=rec.factory)
    engine.subscribe(rec)
    engine.start()
    assert engine.wait(timeout=90) and engine.exit_code == 0
    assert [s.step for s in rec.of(StepDone)] == [1, 2]
