"""Training on a CUDA device gives what the CPU gives (run with ``pytest -m gpu``; CI has no GPU).

Float32 kernels differ between devices in the last bits, so losses are compared with a tolerance;
checkpoints and weight transfers copy bytes, so those are compared exactly.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import torch
from training_helpers import ARCH, make_stage, patterned_batch, tiny_config

from app.node import hardware
from app.node.config import NodeConfig
from app.node.engine import NodeEngine
from app.node.events import ErrorOccurred, Event, StepDone
from app.node.runtime import create_runtime
from app.node.runtime_api import RuntimeContext
from app.node.training.checkpointing import read_resume_point, restore_training_state, save_training_state
from app.node.training.device_check import check_training_device
from app.node.training.pipeline import PipelineDriver
from app.node.training.speed import SpeedPlan
from app.node.training.sync import StageSync
from app.node.training.transport import LocalTransport

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

FP32 = SpeedPlan()
"""These tests compare the device's float32 arithmetic with the CPU's: bf16 autocast (the CUDA
default, tests/training/test_speed_gpu.py) would differ by more than their tolerances."""


def _pipeline(device: str, config) -> tuple[PipelineDriver, dict]:  # noqa: ANN001
    """Two stages in process: the driver (layers 0-2) and a peer holding layers 2-4, on ``device``."""
    net = LocalTransport()
    first = make_stage((0, 2), config, device=device, speed=FP32)
    last = make_stage((2, ARCH.layers), config, device=device, speed=FP32)
    net.add_peer("peer", (2, ARCH.layers), last.handle)
    return PipelineDriver("driver", first, [2], net, micro_batches=config.micro_batches), {"first": first, "last": last}


def _train(driver: PipelineDriver, config, steps: int) -> list[float]:  # noqa: ANN001
    async def go() -> list[float]:
        return [(await driver.train_step(s, patterned_batch(config, s))).loss for s in range(steps)]

    return asyncio.run(go())


def test_device_check_passes_on_this_gpu() -> None:
    check = check_training_device("cuda:0")
    assert check.ok and check.device == "cuda:0", check.problem


def test_two_stage_pipeline_on_cuda_matches_the_cpu() -> None:
    config = tiny_config()
    cpu_driver, cpu_stages = _pipeline("cpu", config)
    gpu_driver, gpu_stages = _pipeline("cuda", config)
    assert all(p.device.type == "cuda" for s in gpu_stages.values() for p in s.params)
    cpu_losses, gpu_losses = _train(cpu_driver, config, 5), _train(gpu_driver, config, 5)
    assert gpu_losses[-1] < gpu_losses[0]
    assert gpu_losses == pytest.approx(cpu_losses, rel=2e-3)
    for name in cpu_stages:
        mine, theirs = gpu_stages[name].state_for_transfer(), cpu_stages[name].state_for_transfer()
        for key, t in mine.items():
            assert t.device.type == "cpu"
            # an Adam step moves a weight by about ±lr; a sign flip of a tiny gradient, by 2·lr
            assert torch.allclose(t, theirs[key], atol=2 * 5 * config.lr), key


def test_diloco_round_on_cuda_keeps_the_anchor_on_the_cpu_and_matches_the_cpu() -> None:
    config = tiny_config(inner_steps=3)
    results = {}
    for device in ("cpu", "cuda"):
        stage = make_stage((0, ARCH.layers), config, device=device, speed=FP32)
        driver = PipelineDriver("solo", stage, [], None, micro_batches=config.micro_batches)
        sync = StageSync("solo", stage, None, config)
        _train(driver, config, 3)
        for _ in range(3):
            sync.note_commit()
        assert sync.due
        asyncio.run(sync.sync())
        assert sync.rounds == 1
        assert all(a.device.type == "cpu" for a in sync.replica.anchor.values())
        assert all(p.device.type == device for p in stage.params)
        # one replica, outer step: the new anchor and the live weights are the same numbers
        live = stage.state_for_transfer()
        assert all(torch.equal(live[n].float(), a) for n, a in sync.replica.anchor.items())
        results[device] = live
    for key, t in results["cuda"].items():
        # 3 inner steps (≤ 2·lr each apart), scaled by the outer Nesterov step (0.7 × 1.9)
        assert torch.allclose(t, results["cpu"][key], atol=2 * 3 * config.lr * 1.4), key


@pytest.mark.parametrize(("save_on", "load_on"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_checkpoint_moves_between_devices_exactly(tmp_path: Path, save_on: str, load_on: str) -> None:
    config = tiny_config()
    stage = make_stage((0, ARCH.layers), config, device=save_on)
    sync = StageSync("solo", stage, None, config)
    driver = PipelineDriver("solo", stage, [], None, micro_batches=config.micro_batches)
    _train(driver, config, 2)
    sync.note_commit()
    assert save_training_state(tmp_path, stage, sync, driver_step=2) is not None
    point = read_resume_point(tmp_path)
    assert point is not None
    other = make_stage((0, ARCH.layers), config, device=load_on)
    other_sync = StageSync("solo", other, None, config)
    restore_training_state(point, other, other_sync)
    assert other.weights_hash() == stage.weights_hash()
    for p_saved, p_loaded in zip(stage.params, other.params, strict=True):
        assert p_loaded.device.type == load_on
        for key in ("exp_avg", "exp_avg_sq"):
            loaded = other.optimizer.state[p_loaded][key]
            assert loaded.device == p_loaded.device
            assert torch.equal(loaded.cpu(), stage.optimizer.state[p_saved][key].cpu())
    assert other_sync.replica.inner_steps_done == 1
    # and it trains on from there on its own device
    _train(PipelineDriver("solo", other, [], None, micro_batches=config.micro_batches), config, 1)


def test_solo_node_trains_on_cuda(tmp_path: Path) -> None:
    info = hardware.detect_device("cuda")
    hardware.save_cache(tmp_path, hardware.HardwareReport(info, 5.0, hardware.tier_for_ms(5.0), torch.__version__,
                                                          time.time()))
    events: list[Event] = []
    lock = threading.Lock()
    runtimes = []

    def factory(ctx: RuntimeContext):  # noqa: ANN202
        runtimes.append(create_runtime(ctx))
        return runtimes[-1]

    def record(event: Event) -> None:
        with lock:
            events.append(event)

    training = {"model": "tiny", "batch_size": 4, "micro_batches": 2, "seq_len": 32, "lr": 3e-3,
                "warmup_steps": 0, "inner_steps": 2, "checkpoint_every": 100, "linger_s": 0.0}
    engine = NodeEngine(NodeConfig(data_dir=tmp_path, port=0, max_steps=4, device="cuda", training=training),
                        runtime_factory=factory)
    engine.subscribe(record)
    engine.start()
    assert engine.wait(timeout=180) and engine.exit_code == 0
    with lock:
        assert not [e for e in events if isinstance(e, ErrorOccurred)]
        steps = [e for e in events if isinstance(e, StepDone)]
    assert [s.step for s in steps] == [1, 2, 3, 4]
    runtime = runtimes[0]
    assert runtime.device == f"cuda:{info.index}"
    assert all(p.device.type == "cuda" for p in runtime.stage.params)
    assert runtime.sync.rounds == 2 and (tmp_path / "checkpoints" / "stage.safetensors").exists()


def test_vocabulary_growth_on_cuda_adds_rows_on_the_device_and_keeps_training() -> None:
    from app.node.training.vocab_growth import grow_stage_vocab

    config = tiny_config(inner_steps=100)
    stage = make_stage((0, ARCH.layers), config, device="cuda")
    sync = StageSync("solo", stage, None, config)
    driver = PipelineDriver("solo", stage, [], None, micro_batches=config.micro_batches)
    _train(driver, config, 2)
    grow_stage_vocab(stage, sync, [(1, 2), (3, ARCH.vocab)], "v-next")
    vocab = ARCH.vocab + 2
    assert stage.shard.architecture.vocab == vocab
    for p in stage.params:
        assert p.device.type == "cuda"
        st = stage.optimizer.state.get(p)
        if st is not None:
            assert st["exp_avg"].device == p.device and st["exp_avg"].shape == p.shape
    assert all(a.device.type == "cpu" for a in sync.replica.anchor.values())
    assert sync.replica.pseudo_gradient()["embedding.table.weight"].shape[0] == vocab
    _train(driver, config, 1)  # ids of the old vocabulary still train on the grown model


def test_async_round_on_cuda_submits_cpu_tensors_close_to_the_cpu_round(tmp_path: Path) -> None:
    from app.node.data.bundled import open_bundled_store
    from app.node.data.loader import BatchLoader
    from app.node.model.shard import ModelShard
    from app.node.training.async_mode import AsyncConfig, AsyncTrainer

    store = open_bundled_store(tmp_path)
    snapshot = ModelShard.full(ARCH).state_dict()
    results = {}
    for device in ("cpu", "cuda"):
        loader = BatchLoader(store, store.manifest, batch_size=8, seq_len=32, seed=3, share=(1, 2))
        trainer = AsyncTrainer(ARCH, loader, node_id="a", config=AsyncConfig(steps=3, lr=1e-3), device=device)
        results[device] = trainer.train_round(snapshot, 0.0)
    gpu, cpu = results["cuda"], results["cpu"]
    assert gpu.losses == pytest.approx(cpu.losses, rel=2e-3)
    for name, t in gpu.contribution.tensors.items():
        assert t.device.type == "cpu"
        assert torch.allclose(t, cpu.contribution.tensors[name], atol=2 * 3 * 1e-3), name  # 3 Adam steps of ±lr
