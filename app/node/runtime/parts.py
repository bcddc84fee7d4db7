"""A node's parts, fully wired: what the composition root (assembly.py) returns, phase by phase.

``NodeBase`` is what a node has from its first second (identity, network, economy, vocabulary,
the activity line and the step reports), so wallet commands and queries are answered while it
checks its device and joins; ``Capacity`` is what it measured (device, tier, memory, the modes
it runs); ``NodeParts`` is the whole node once it joined: base, capacity, data and its job — a
pipeline stage (``PipelineJob``) or async snapshot training (``AsyncJob``). Every field is set when the object is built; an ``Optional``
here means "this node has none" (a validator has no driver, a solo node no healing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.node.model.architecture import ModelArchitecture
    from app.node.runtime.async_service import AsyncService
    from app.node.runtime.data_service import DataService
    from app.node.runtime.economy_link import EconomyLink
    from app.node.runtime.heal_service import HealService
    from app.node.runtime.mode_service import ModeService
    from app.node.runtime.network import NetworkService
    from app.node.runtime.quorum_service import QuorumService
    from app.node.runtime.stage_host import StageHost
    from app.node.runtime.status import Activity, StepReports
    from app.node.runtime.upgrade_service import UpgradeService
    from app.node.runtime.vocab_service import VocabService
    from app.node.runtime_api import RuntimeContext
    from app.node.training.config import TrainingConfig
    from app.node.training.pipeline import PipelineDriver
    from app.node.training.trainer import NodeTrainer


@dataclass(frozen=True)
class NodeBase:
    ctx: RuntimeContext
    training: TrainingConfig
    genesis_arch: ModelArchitecture  # the architecture of config.toml, at the genesis vocabulary
    net: NetworkService
    economy: EconomyLink
    vocab: VocabService
    activity: Activity
    reports: StepReports

    def architecture(self) -> ModelArchitecture:
        """The model as it is now: the configured one at the vocabulary voted in so far."""
        return self.vocab.architecture(self.genesis_arch)


@dataclass(frozen=True)
class PipelineJob:
    host: StageHost
    trainer: NodeTrainer
    driver: PipelineDriver | None  # the driver this node started with (kept after a move, for the figures)
    quorums: QuorumService | None  # the driver's quorum
    heal: HealService | None  # None on a solo network that finds no peers while it runs (no LAN discovery)
    upgrades: UpgradeService | None = None  # hears architecture upgrades (None on a solo network)


@dataclass(frozen=True)
class AsyncJob:
    service: AsyncService


@dataclass(frozen=True)
class Capacity:
    device: str  # where training runs: the measured device when its check passed, else "cpu"
    tier: str  # the speed tier on that device
    memory: int  # the memory budget for training, bytes
    layers_fit: int  # whole transformer layers that fit in it
    modes: ModeService


@dataclass(frozen=True)
class NodeParts:
    base: NodeBase
    capacity: Capacity
    data: DataService
    job: PipelineJob | AsyncJob
