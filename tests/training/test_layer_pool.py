"""DynamicLayerPool: replicas, healing, joins and the 50-node architecture recalculation."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.node.model.architecture import GIB, ModelArchitecture
from app.node.training.layer_pool import DynamicLayerPool, NodeOffer, stage_bounds

ARCH = ModelArchitecture.genesis()  # 11 layers


def offers(n: int, layers_fit: int, memory: int = 2 * GIB) -> list[NodeOffer]:
    return [NodeOffer(f"n{i:03d}", layers_fit, memory) for i in range(n)]


def test_single_node_holds_everything_as_driver_and_validator() -> None:
    (a,) = DynamicLayerPool(ARCH).plan(offers(1, 20))
    assert a.layer_range == (0, ARCH.layers) and a.roles == ("driver", "validator")


def test_lone_genesis_node_trains_the_whole_model_even_when_tight() -> None:
    (a,) = DynamicLayerPool(ARCH).plan(offers(1, 3))
    assert a.layer_range == (0, ARCH.layers)


def test_small_nodes_form_a_pipeline_with_two_replicas_per_stage() -> None:
    pool = DynamicLayerPool(ARCH)
    plan = pool.plan(offers(8, 5))  # 5 layers each: 4 stages of <= 3 layers (+ embedding/head)
    assert len(pool.bounds) >= 3
    assert min(pool.replicas_per_stage()) >= 2
    covered = sorted({a.layer_range for a in plan})
    assert covered[0][0] == 0 and covered[-1][1] == ARCH.layers
    assert all(b[0] == a[1] for a, b in zip(covered, covered[1:], strict=False))
    assert sum(a.with_embedding for a in plan) == pool.replicas_per_stage()[0]


def test_max_layers_per_node_forces_a_multi_stage_pipeline() -> None:
    pool = DynamicLayerPool(ModelArchitecture.tiny(), max_layers_per_node=2)
    plan = pool.plan(offers(4, 100))
    assert pool.bounds == [(0, 2), (2, 4)]
    assert pool.replicas_per_stage() == (2, 2)
    assert {a.roles for a in plan} == {("driver",), ("validator",)}


def test_dead_holder_is_replaced_from_a_stage_with_spare_replicas() -> None:
    pool = DynamicLayerPool(ModelArchitecture.tiny(), max_layers_per_node=2)
    pool.plan(offers(5, 100))  # stages of 2 holders plus one spare third replica
    assert sorted(pool.replicas_per_stage()) == [2, 3]
    crowded = max(pool.holders, key=lambda s: len(pool.holders[s]))
    other = 1 - crowded
    victim = pool.holders[other][0]
    moves = pool.remove(victim)
    assert pool.replicas_per_stage() == (2, 2)
    assert len(moves) == 1 and moves[0].stage == other
    assert moves[0].download_from in pool.holders[other] and moves[0].download_from != moves[0].node_id


def test_join_goes_to_least_replicated_stage_with_a_download_source() -> None:
    pool = DynamicLayerPool(ModelArchitecture.tiny(), max_layers_per_node=2)
    pool.plan(offers(3, 100))
    thin = min(pool.holders, key=lambda s: len(pool.holders[s]))
    assignment = pool.join(NodeOffer("late", 100))
    assert assignment is not None and assignment.stage == thin
    assert assignment.download_from is not None


def test_architecture_recalculated_every_50_joins_with_the_1_3x_rule() -> None:
    pool = DynamicLayerPool(ARCH)
    pool.plan(offers(1, 100, memory=2 * GIB))
    notices = []
    for i in range(120):
        pool.join(NodeOffer(f"j{i:03d}", 100, 8 * GIB))
        notice = pool.check_upgrade()
        if notice:
            notices.append((pool.joins, notice))
    assert [joins for joins, _ in notices] == [51, 101]
    first = notices[0][1]
    assert first.candidate.param_count() >= 1.3 * first.current.param_count()


def test_no_upgrade_when_growth_is_below_1_3x() -> None:
    pool = DynamicLayerPool(ARCH)
    pool.plan(offers(2, 100, memory=2 * GIB))
    for i in range(50):
        pool.join(NodeOffer(f"j{i}", 100, memory_bytes=1))  # nodes that add almost no memory
    assert pool.check_upgrade() is None


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(2, 30), st.integers(1, 12))
def test_plan_covers_every_layer_and_ranges_match_between_replicas(nodes: int, fit: int, layers: int) -> None:
    assume(nodes >= layers or fit >= layers + 2)  # otherwise no split can fit: PoolError is right
    arch = ModelArchitecture.tiny().with_changes(layers=layers)
    pool = DynamicLayerPool(arch)
    plan = pool.plan(offers(nodes, max(fit, 3)))
    assert {a.layer_range for a in plan} == set(pool.bounds)
    assert pool.bounds == stage_bounds(layers, len(pool.bounds))
    if nodes >= 2 * len(pool.bounds):
        assert min(pool.replicas_per_stage()) >= 2
