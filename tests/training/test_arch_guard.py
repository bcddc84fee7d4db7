"""A stage refuses drivers of another architecture (block type included) without computing."""

from __future__ import annotations

import asyncio

import pytest
import torch

from app.node.model.architecture import ModelArchitecture
from app.node.training.arch_guard import (
    ARCH_MISMATCH,
    ArchitectureMismatch,
    ArchTaggedTransport,
    arch_tag,
)
from app.node.training.pipeline import PipelineDriver
from app.node.training.stage import StageWorker, build_shard
from app.node.training.transport import OP_FORWARD, LocalTransport
from tests.training.training_helpers import tiny_config

TRANSFORMER = ModelArchitecture.tiny()
INL = TRANSFORMER.with_changes(block_type="inl")


def _stage(arch: ModelArchitecture, bounds: tuple[int, int]) -> StageWorker:
    shard = build_shard(arch, bounds, with_embedding=bounds[0] == 0, with_head=bounds[1] == arch.layers, seed=0)
    return StageWorker(shard, tiny_config())


def test_tags_name_block_type_shape_and_version_but_not_the_vocabulary() -> None:
    assert arch_tag(INL) != arch_tag(TRANSFORMER) and arch_tag(INL).startswith("inl-v1-")
    assert arch_tag(TRANSFORMER.with_changes(version=2)) != arch_tag(TRANSFORMER)
    assert arch_tag(TRANSFORMER.with_changes(vocab=300)) == arch_tag(TRANSFORMER)


def test_a_stage_of_another_block_type_refuses_and_the_driver_looks_elsewhere() -> None:
    worker = _stage(TRANSFORMER, (2, 4))
    hidden = torch.randn(2, 8, TRANSFORMER.hidden)
    meta = {"driver": "d", "step": 0, "mb": 0}
    answer, tensors = worker.handle_sync(OP_FORWARD, {**meta, "arch": arch_tag(INL)}, [hidden, torch.zeros(2, 8,
                                                                                                           dtype=torch.long)])
    assert answer["status"] == ARCH_MISMATCH and answer["arch"] == arch_tag(TRANSFORMER) and not tensors
    assert worker.tokens_trained == 0 and not worker._acc
    assert not worker.seen_drivers  # a driver of another version is not one of ours: an idle replica stays idle
    net = LocalTransport()
    net.add_peer("transformer-peer", (2, 4), worker.handle)
    transport = ArchTaggedTransport(net, lambda: INL)
    with pytest.raises(ArchitectureMismatch, match="transformer-v1"):
        asyncio.run(transport.call(2, OP_FORWARD, meta, [hidden, torch.zeros(2, 8, dtype=torch.long)]))


def test_a_pipeline_of_one_architecture_trains_through_the_tagged_transport() -> None:
    config = tiny_config(micro_batches=1)
    first, last = _stage(INL, (0, 2)), _stage(INL, (2, 4))
    net = LocalTransport()
    net.add_peer("inl-peer", (2, 4), last.handle)
    driver = PipelineDriver("d", first, [2], ArchTaggedTransport(net, lambda: INL),
                            micro_batches=config.micro_batches)
    batch = torch.randint(0, INL.vocab, (config.batch_size, 17), generator=torch.Generator().manual_seed(0))
    step = asyncio.run(driver.train_step(0, batch))
    assert step.loss > 0 and last.inner_step == 1 and first.inner_step == 1
