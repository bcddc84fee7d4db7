"""Architecture upgrades: the recalculation fires from the registry, and its signed record."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import pytest
import torch

from app.crypto.keys import PrivateKey
from app.node.migration import layers_after, node_impact
from app.node.model.architecture import GIB, ModelArchitecture, calculate_optimal_architecture
from app.node.model.growth import grow_to
from app.node.model.shard import ModelShard
from app.node.p2p.records import PeerRecord, parse_peer_record, sign_peer_record
from app.node.runtime.planner import Planner, offer_of
from app.node.training.config import TrainingConfig
from app.node.training.layer_pool import DynamicLayerPool, NodeOffer
from app.node.training.upgrade import InvalidUpgrade, parse_upgrade, plan_upgrade, sign_upgrade

TINY = ModelArchitecture.tiny()


def _plan():  # noqa: ANN202
    plan = plan_upgrade(TINY, calculate_optimal_architecture(8 * GIB, nodes=8, vocab=TINY.vocab, max_seq=TINY.max_seq))
    assert plan is not None
    return plan


def test_the_plan_is_exactly_what_growth_reaches_and_keeps_the_logits() -> None:
    plan = _plan()
    assert plan.target.version == TINY.version + 1 and plan.target.head_dim == TINY.head_dim
    assert plan.target.param_count() >= 1.3 * TINY.param_count()
    torch.manual_seed(0)
    model = ModelShard(TINY, 0, TINY.layers, with_embedding=True, with_head=True).eval()
    grown = grow_to(model, plan.target).eval()
    assert grown.architecture == plan.target  # norm_eps and version included: the record's exact shape
    tokens = torch.randint(0, TINY.vocab, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(grown(tokens), model(tokens), rtol=1e-4, atol=1e-5)


def test_no_plan_below_1_3x() -> None:
    assert plan_upgrade(TINY, TINY.with_changes(layers=TINY.layers + 1)) is None


def test_signed_record_round_trips_and_refuses_tampering_and_foreign_shapes() -> None:
    key, plan = PrivateKey.generate(), _plan()
    record = sign_upgrade(key, plan, nodes=51)
    again = parse_upgrade(record.to_bytes())
    assert again.target == plan.target and again.nodes == 51 and again.signer == key.node_id
    outer = json.loads(record.to_bytes())
    outer["body"]["nodes"] = 52
    with pytest.raises(InvalidUpgrade, match="signature"):
        parse_upgrade(json.dumps(outer).encode())
    # a correctly signed record whose shape is not the deterministic growth of its base
    forged = sign_upgrade(key, plan, nodes=51)
    body = json.loads(forged.to_bytes())
    body["body"]["to"]["layers"] += 3
    from app.node.training import upgrade as u
    resigned = {"body": body["body"], "public_key": key.public_key.data.hex(),
                "signature": key.sign(u._message(body["body"])).hex()}
    with pytest.raises(InvalidUpgrade, match="growth plan"):
        parse_upgrade(json.dumps(resigned).encode())
    with pytest.raises(InvalidUpgrade):
        parse_upgrade(b"\xff" * 10)


def test_recalculation_fires_at_every_50th_node_of_the_registry_not_every_join() -> None:
    def pool_with(registry: int) -> DynamicLayerPool:
        pool = DynamicLayerPool(TINY)
        pool.adopt([(0, TINY.layers)], {0: ["n0"]}, [NodeOffer(f"n{i}", 100, 2 * GIB) for i in range(registry)])
        return pool

    fired = []
    for registry in range(1, 160):
        pool = pool_with(registry)
        pool.join(NodeOffer("me", 100, 2 * GIB))
        if pool.check_upgrade() is not None:
            fired.append(registry + 1)
    assert fired == [51, 101, 151]


def test_offers_carry_the_memory_budget_in_the_signed_peer_record() -> None:
    key = PrivateKey.generate()
    record = parse_peer_record(sign_peer_record(key, "127.0.0.1:9", tier="T2", capacity=7, memory=3 * GIB).raw)
    assert record.memory == 3 * GIB and offer_of(record).memory_bytes == 3 * GIB
    assert parse_peer_record(sign_peer_record(key, "127.0.0.1:9").raw).memory == 0  # an older node says nothing


@dataclass
class _View:
    others: list[PeerRecord]
    announced: list[PeerRecord]
    solo: bool = False

    @property
    def node(self) -> _View:
        return self

    async def who_holds(self, layer: int) -> list[PeerRecord]:
        return [r for r in self.announced if r.layer_start <= layer < r.layer_end]

    async def peers(self) -> list[PeerRecord]:
        return self.others


def test_the_planner_announces_an_upgrade_when_a_join_reaches_the_interval() -> None:
    config = TrainingConfig.from_dict({"model": "tiny", "recalc_interval_nodes": 4, "join_wait_s": 0})
    holders = [PeerRecord(public_key=f"h{i}".encode(), address="127.0.0.1:1", capacity=100.0, timestamp=time.time(),
                          layer_start=0, layer_end=TINY.layers, memory=4 * GIB) for i in range(4)]
    for registry, expect in ((holders[:3], False), (holders, True)):
        planner = Planner(_View(registry, registry), TINY, config, lambda _t: None)  # type: ignore[arg-type]
        asyncio.run(planner.assign(NodeOffer("me", 100, 4 * GIB)))
        assert (planner.upgrade is not None) is expect
    assert planner.upgrade is not None and planner.upgrade.nodes == 5


def test_node_impact_counts_the_inserted_blocks_on_the_shard_that_holds_the_insertion_point() -> None:
    plan = _plan()
    half = TINY.layers // 2
    assert layers_after(plan, (0, half)) == (0, half)
    assert layers_after(plan, (half, TINY.layers)) == (half, TINY.layers + plan.inserted)
    whole = node_impact(plan, (0, TINY.layers), with_embedding=True, with_head=True, memory_budget_bytes=1)
    assert whole.parameters_after == plan.target.param_count() and not whole.fits
    assert node_impact(plan, (0, TINY.layers), with_embedding=True, with_head=True,
                       memory_budget_bytes=8 * GIB).fits


def test_shards_grown_one_by_one_compose_to_the_same_function() -> None:
    from app.node.migration import grow_shard

    plan = plan_upgrade(TINY, TINY.with_changes(hidden=128, heads=8, kv_heads=4, ffn=512, layers=6))
    assert plan is not None
    torch.manual_seed(0)
    whole = ModelShard(TINY, 0, TINY.layers, with_embedding=True, with_head=True).eval()
    first = ModelShard(TINY, 0, 2, with_embedding=True, with_head=False)
    second = ModelShard(TINY, 2, TINY.layers, with_embedding=False, with_head=True)
    first.load_state_dict({k: v for k, v in whole.state_dict().items() if k in first.state_dict()})
    second.load_state_dict({k: v for k, v in whole.state_dict().items() if k in second.state_dict()})
    grown = [grow_shard(first, plan).eval(), grow_shard(second, plan).eval()]
    assert [g.layer_range for g in grown] == [(0, 2), (2, plan.target.layers)]  # the second holds layer 2
    tokens = torch.randint(0, TINY.vocab, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(grown[1](grown[0](tokens)), whole(tokens), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("factor", [1.5, 2.0, 40.0])
def test_a_growth_cap_keeps_one_upgrade_within_its_factor_and_the_record_still_verifies(factor: float) -> None:
    offers = [NodeOffer(f"n{i}", 100, 8 * GIB) for i in range(4)]
    pool = DynamicLayerPool(TINY, max_upgrade_factor=factor)
    pool.plan(offers)
    notice = pool.check_upgrade(force=True)
    assert notice is not None
    target = notice.plan.target
    assert 1.3 * TINY.param_count() <= target.param_count() <= factor * TINY.param_count()
    uncapped = DynamicLayerPool(TINY)
    uncapped.plan(offers)
    scaler = uncapped.check_upgrade(force=True)
    assert scaler is not None and scaler.plan.target.param_count() > 40 * TINY.param_count()
    assert target.layers <= scaler.plan.target.layers and target.hidden <= scaler.plan.target.hidden
    # every node re-derives the plan from the record: the capped shape is plain growth of its base
    again = parse_upgrade(sign_upgrade(PrivateKey.generate(), notice.plan, nodes=4).to_bytes())
    assert again.plan == notice.plan


def test_the_devnet_cap_grows_the_tiny_model_by_identity_blocks_only() -> None:
    pool = DynamicLayerPool(TINY, max_upgrade_factor=1.5)
    pool.plan([NodeOffer(f"n{i}", 100, 8 * GIB) for i in range(4)])
    notice = pool.check_upgrade(force=True)
    assert notice is not None and not notice.plan.widens
    assert (notice.plan.inserted, notice.plan.insert_at, notice.plan.target.layers) == (2, 2, 6)


class _Dht:
    def __init__(self) -> None:
        self.values: dict[bytes, list[bytes]] = {}

    async def store(self, key: bytes, value: bytes, ttl: float) -> int:
        assert ttl <= 86400  # the longest a DHT node keeps a value (p2p/dht.py refuses longer)
        self.values.setdefault(key, []).append(value)
        return 1

    async def get(self, key: bytes) -> list[bytes]:
        return list(self.values.get(key, []))


class _Net:
    """The network as UpgradeService sees it: our key, the DHT and the registry's peers."""

    def __init__(self, dht: _Dht, peers: list[PeerRecord]) -> None:
        self.node = self
        self.key, self.dht, self._peers = PrivateKey.generate(), dht, peers

    async def peers(self) -> list[PeerRecord]:
        return self._peers


def test_a_forced_recalculation_publishes_once_at_its_step_and_every_node_hears_it(tmp_path) -> None:  # noqa: ANN001
    from app.node.events import UpgradeAvailable
    from app.node.migration import load_pending
    from app.node.runtime.upgrade_service import UpgradeService
    from app.node.training.upgrade import dht_key

    peers = [PeerRecord(public_key=f"p{i}".encode(), address="127.0.0.1:1", capacity=100.0, timestamp=time.time(),
                        memory=8 * GIB) for i in range(3)]
    dht, heard = _Dht(), []

    def service(name: str, force_at_step: int) -> UpgradeService:
        return UpgradeService(_Net(dht, peers), TINY, tmp_path / name, memory_budget=8 * GIB,
                              holding=lambda: ((0, 2), True, False), emit=heard.append, interval_s=1.0,
                              force_at_step=force_at_step, max_upgrade_factor=1.5)

    driver, worker = service("driver", 8), service("worker", 0)
    me = NodeOffer("me", 100, 8 * GIB)

    async def scenario() -> None:
        for step in range(1, 8):
            assert await driver.after_driver_step(step, me) is None and not driver.forced_upgrade_due(step)
        assert await worker.check() is None  # nothing published before the step
        record = await driver.after_driver_step(8, me)
        assert record is not None and record.nodes == 4 and record.target.layers == 6
        assert driver.forced_upgrade_due(8) and await driver.after_driver_step(9, me) is None
        assert len(dht.values[dht_key(2)]) == 1  # published once
        assert (await worker.check()) == record and not worker.forced_upgrade_due(8)

    asyncio.run(scenario())
    assert [e.candidate_version for e in heard if isinstance(e, UpgradeAvailable)] == [2, 2]
    assert load_pending(tmp_path / "worker") == load_pending(tmp_path / "driver")
