"""A solo node trains an INL model, and turns activation checkpointing on when its memory needs it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from app.node.engine import NodeEngine
from app.node.events import LayersAssigned, StepDone
from app.node.model.architecture import ModelArchitecture
from app.node.training.speed import stage_training_bytes
from tests.training.test_runtime_solo import TRAINING, _config, _Recorder

TOKENS = TRAINING["batch_size"] * TRAINING["seq_len"]


def _run(tmp_path: Path, steps: int, memory_bytes: int | None, **training: object) -> _Recorder:
    config = _config(tmp_path, steps)
    config = dataclasses.replace(config, training={**config.training, **training},
                                 limits=dataclasses.replace(config.limits, memory_bytes=memory_bytes))
    rec = _Recorder()
    engine = NodeEngine(config, runtime_factory=rec.factory)
    engine.subscribe(rec)
    engine.start()
    assert engine.wait(timeout=120) and engine.exit_code == 0
    return rec


def test_solo_inl_node_trains_and_says_its_block_type(tmp_path: Path) -> None:
    rec = _run(tmp_path, 3, None, block_type="inl")
    (layers,) = rec.of(LayersAssigned)
    assert layers.block_type == "inl" and layers.memory_savers == ()
    assert layers.parameters == ModelArchitecture.tiny().with_changes(block_type="inl").param_count()
    assert [s.step for s in rec.of(StepDone)] == [1, 2, 3]
    assert rec.runtime.stage.shard.architecture.block_type == "inl"


def test_node_whose_layers_do_not_fit_checkpoints_activations_and_says_so(tmp_path: Path) -> None:
    arch = ModelArchitecture.tiny()
    plain = stage_training_bytes(arch, arch.layers, TOKENS, with_embedding=True, with_head=True)
    rec = _run(tmp_path, 2, plain - 1)
    (layers,) = rec.of(LayersAssigned)
    assert layers.memory_savers == ("activation_checkpointing",)
    assert rec.runtime.stage.speed.checkpoint_activations
    assert [s.step for s in rec.of(StepDone)] == [1, 2]
