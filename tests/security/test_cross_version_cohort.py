"""Holders of the same layers on two architecture versions never mix their DiLoCo payloads.

During a migration (DESIGN.md §8) the old and the new version run side by side, and a stage
that holds layers 0-2 holds the same layer range in both: its tensors may even have the same
shapes (depth growth inserts blocks elsewhere). A pseudo-gradient of the other version is
refused with a retryable busy status naming both versions, the round goes on without it, and
each side ends exactly where it would have ended alone.
"""

from __future__ import annotations

import asyncio

import pytest

from app.node.model.architecture import ModelArchitecture
from app.node.p2p.errors import PeerBusy
from app.node.p2p.records import LayerAnnouncement
from app.node.runtime import stage_protocol
from app.node.runtime.p2p_transport import P2PCohort
from app.node.training.arch_guard import arch_tag
from app.node.training.sync import StageSync
from tests.p2p.helpers import run, swarm
from tests.security.test_cohort_forgery import CONFIG, RANGE, _Holder, _poison
from tests.training.training_helpers import tiny_config

OLD = ModelArchitecture.tiny()
NEW = OLD.with_changes(layers=OLD.layers + 2, version=OLD.version + 1)
PATIENT = tiny_config(inner_steps=CONFIG.inner_steps, sync_timeout_s=600.0)
"""An exchange ends as soon as the payloads it waits for arrived (an event, not a timer): a long
timeout only keeps a loaded machine from cutting the same-version round short."""


class _Tagged(_Holder):
    def __init__(self, node, data_seed: int, tag: str) -> None:  # noqa: ANN001
        super().__init__(node, data_seed)
        self.cohort = P2PCohort(node, holds=lambda: RANGE, position=self.position,
                                round_length=lambda: CONFIG.inner_steps, arch=lambda: tag)
        self.sync = StageSync(node.node_id.hex(), self.stage, self.cohort, PATIENT)
        node.set_sync_handler(self.cohort.handle)


async def _round(tags: tuple[str, str]) -> tuple[list[tuple[str, ...]], list[float]]:
    async with swarm(2) as (_, (n1, n2)):
        holders = [_Tagged(n1, 0, tags[0]), _Tagged(n2, 100, tags[1])]
        for h in holders:
            await h.node.registry.announce(LayerAnnouncement(*RANGE, "T3", 1.0))
            await h.train(CONFIG.inner_steps)
        reports = await asyncio.gather(*(h.sync.sync() for h in holders))
        return [r.members for r in reports], [h.held_out_loss() for h in holders]


def test_payloads_of_another_version_are_refused_retryably_and_never_merged() -> None:
    same_members, _ = run(_round((arch_tag(OLD), arch_tag(OLD))))
    assert [len(m) for m in same_members] == [2, 2]  # one version: the cohort merges both
    alone_members, alone = run(_round((arch_tag(OLD), arch_tag(OLD) + "-alone")))
    mixed_members, mixed = run(_round((arch_tag(OLD), arch_tag(NEW))))
    assert [len(m) for m in mixed_members] == [1, 1]  # each side merged only its own payload
    assert mixed == pytest.approx(alone, abs=1e-6)


def test_the_refusal_names_both_versions_and_is_a_busy_retry() -> None:
    async def scenario() -> str:
        async with swarm(2) as (_, (n1, n2)):
            receiver = _Tagged(n1, 0, arch_tag(NEW))
            sender = _Tagged(n2, 0, arch_tag(OLD))
            for h in (receiver, sender):
                await h.node.registry.announce(LayerAnnouncement(*RANGE, "T3", 1.0))
            request = stage_protocol.sync_request(RANGE, 0, 1, 0.0, arch=arch_tag(OLD))
            with pytest.raises(PeerBusy) as err:
                await n2.call_sync(n1.record(), request, _poison(sender), 10)
            untagged = stage_protocol.sync_request(RANGE, 0, 1, 0.0)
            with pytest.raises(PeerBusy):
                await n2.call_sync(n1.record(), untagged, _poison(sender), 10)
            assert receiver.cohort._boxes == {}
            return str(err.value)

    message = run(scenario())
    assert arch_tag(NEW) in message and arch_tag(OLD) in message and "versions never mix" in message
