"""HealService: a spare holder moves onto a stage that lost a replica, and only that node moves."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from app.crypto.keys import PrivateKey
from app.node import hardware
from app.node.config import NodeConfig
from app.node.model.architecture import ModelArchitecture
from app.node.p2p.config import P2PConfig
from app.node.p2p.records import PeerRecord
from app.node.runtime.heal_service import HealService
from app.node.runtime.network import NetworkService
from app.node.runtime.stage_host import StageHooks, StageHost
from app.node.runtime.vocab_service import VocabService
from app.node.runtime_api import RunControl, RuntimeContext
from app.node.training.config import TrainingConfig
from app.node.training.layer_pool import Assignment
from app.node.training.trainer import NodeTrainer

ARCH = ModelArchitecture.tiny()


def _record(name: str, layers: tuple[int, int], age_s: float = 0.0) -> PeerRecord:
    # node_id is sha256(public_key): the tests name nodes by public key and look ids up below
    return PeerRecord(public_key=name.encode(), address="127.0.0.1:1", capacity=100.0,
                      layer_start=layers[0], layer_end=layers[1], timestamp=time.time() - age_s)


@dataclass
class _FakeP2P:
    """The DHT view a node has: who announced which layers (the network is not under test)."""

    announced: list[PeerRecord]
    me: PeerRecord
    config: P2PConfig = field(default_factory=P2PConfig)

    async def who_holds(self, layer: int) -> list[PeerRecord]:
        return [r for r in self.announced if r.layer_start <= layer < r.layer_end]

    def record(self) -> PeerRecord:
        return self.me


@dataclass
class _FakeNet:
    node: _FakeP2P
    node_id: str
    others: list[PeerRecord] = field(default_factory=list)
    replicas: tuple[int, ...] = ()

    def set_replicas(self, replicas: tuple[int, ...]) -> None:
        self.replicas = replicas

    async def peers(self) -> list[PeerRecord]:
        return self.others


def _service(me: PeerRecord, announced: list[PeerRecord], moved: list[Assignment]) -> HealService:
    net = _FakeNet(_FakeP2P(announced, me), me.node_id.hex(), [r for r in announced if r != me])
    config = TrainingConfig.from_dict({"model": "tiny", "max_layers_per_node": 2})

    async def move(a: Assignment) -> None:
        moved.append(a)

    return HealService(net, ARCH, config, move, current=lambda: (me.layer_start, me.layer_end))  # type: ignore[arg-type]


def test_spare_driver_moves_to_the_stage_that_lost_a_replica_and_others_stay() -> None:
    drivers = [_record(n, (0, 2)) for n in ("d1", "d2", "d3")]
    survivor = _record("v1", (2, 4))  # its twin stopped heart-beating and dropped out of the DHT
    announced = [*drivers, survivor]
    results = {}
    for node in announced:
        moved: list[Assignment] = []
        asyncio.run(_service(node, announced, moved).check())
        results[node.public_key.decode()] = moved
    movers = {name: m for name, m in results.items() if m}
    assert len(movers) == 1  # every node computed the same plan; exactly one acts
    (move,) = next(iter(movers.values()))
    assert move.layer_range == (2, 4) and move.with_head
    assert move.download_from == survivor.node_id.hex()


def test_no_move_while_every_stage_has_its_replicas() -> None:
    announced = [_record(n, (0, 2)) for n in ("d1", "d2")] + [_record(n, (2, 4)) for n in ("v1", "v2")]
    moved: list[Assignment] = []
    service = _service(announced[0], announced, moved)
    asyncio.run(service.check())
    assert moved == []
    assert service.net.replicas == (2, 2, 2, 2)  # reported per layer for the UI


def _check_all(nodes: list[PeerRecord], announced: list[PeerRecord]) -> dict[str, list[Assignment]]:
    results = {}
    for node in nodes:
        moved: list[Assignment] = []
        asyncio.run(_service(node, announced, moved).check())
        results[node.public_key.decode()] = moved
    return {name: m for name, m in results.items() if m}


def test_a_node_that_moved_counts_on_its_new_stage_only_and_is_not_moved_again() -> None:
    # "mover" healed onto (2, 4); its old (0, 2) announcement lives on in the DHT until its TTL
    drivers = [_record(n, (0, 2)) for n in ("d1", "d2", "d3")]
    old = _record("mover", (0, 2), age_s=5.0)
    new = _record("mover", (2, 4))
    announced = [*drivers, old, new]
    movers = _check_all([*drivers, new], announced)
    assert "mover" not in movers  # never moved onto the stage it already serves
    assert len(movers) == 1  # stage (2, 4) has one holder of the two wanted: one driver moves
    (move,) = next(iter(movers.values()))
    assert move.layer_range == (2, 4) and move.download_from == new.node_id.hex()


def test_a_holder_that_stopped_heart_beating_is_not_the_download_source() -> None:
    # the lone validator died: its announcement outlives it by up to a TTL, unrefreshed
    drivers = [_record(n, (0, 2)) for n in ("d1", "d2", "d3")]
    dead = _record("v0", (2, 4), age_s=4 * P2PConfig().heartbeat_interval_s)
    movers = _check_all(drivers, [*drivers, dead])
    (move,) = next(iter(movers.values()))
    assert move.layer_range == (2, 4) and move.download_from is None  # genesis weights, no dead source


def test_a_move_onto_the_stage_a_node_already_serves_keeps_its_trained_weights(tmp_path: Path) -> None:
    async def scenario() -> None:
        report = hardware.HardwareReport(hardware.detect_device("cpu"), 20.0, hardware.tier_for_ms(20.0),
                                         torch.__version__, time.time())
        ctx = RuntimeContext(NodeConfig(data_dir=tmp_path, port=0, training={"model": "tiny"}), report,
                             lambda _e: None, lambda _s, _d: None, RunControl(), ThreadPoolExecutor(1),
                             asyncio.get_running_loop())
        training = TrainingConfig.from_dict({"model": "tiny"})
        # a network that was never started: a repeated move never touches it
        net = NetworkService.open(PrivateKey.generate(), host="127.0.0.1", port=0, trackers=(), listen=False,
                                  p2p={}, emit=lambda _e: None)
        host = StageHost(ctx, net, VocabService(tmp_path, lambda: []), training, lambda _text: None,
                         Assignment("me", 1, (2, 4), False, True), device="cpu", offer=("T3", 2), hooks=StageHooks())
        stage = host.stage
        with torch.no_grad():
            stage.params[0].add_(1.0)  # "trained" weights, unlike the genesis ones a rebuild would make
        trained = stage.weights_hash()
        await host.move(Assignment("me", 1, (2, 4), False, True, download_from="someone"),
                        NodeTrainer("me", stage, training))
        assert host.stage is stage and stage.weights_hash() == trained

    asyncio.run(scenario())
