import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.node.hardware import SpeedTier
from app.node.modes import (
    ASYNC,
    DATA,
    DATA_MIN_FREE_DISK_BYTES,
    INFERENCE,
    MODES,
    PIPELINE,
    VERIFY,
    VERIFY_MIN_STAKE_UNITS,
    ModeNotAvailable,
    NodeCapabilities,
    apply_toggles,
    explicit_modes,
    propose_modes,
)

GB = 2**30


def caps(tier=SpeedTier.T4, layers=4, full=True, disk=100 * GB, stake=0) -> NodeCapabilities:
    return NodeCapabilities(tier, layers, full, disk, stake)


def test_t5_is_async_only_for_training() -> None:
    plan = propose_modes(caps(tier=SpeedTier.T5))
    assert PIPELINE not in plan.available and ASYNC in plan.proposed
    assert "too slow" in plan.reason(PIPELINE)


@pytest.mark.parametrize("tier", [SpeedTier.T1, SpeedTier.T2, SpeedTier.T3, SpeedTier.T4])
def test_t1_to_t4_join_pipelines(tier: SpeedTier) -> None:
    plan = propose_modes(caps(tier=tier))
    assert plan.proposed[0] == PIPELINE and ASYNC not in plan.proposed


def test_no_room_for_a_layer_falls_back_to_async() -> None:
    plan = propose_modes(caps(layers=0))
    assert PIPELINE not in plan.available and ASYNC in plan.proposed
    assert "memory" in plan.reason(PIPELINE)


def test_storage_rich_nodes_serve_data() -> None:
    assert DATA in propose_modes(caps(disk=DATA_MIN_FREE_DISK_BYTES)).proposed
    poor = propose_modes(caps(disk=DATA_MIN_FREE_DISK_BYTES - 1))
    assert DATA not in poor.available and "free disk" in poor.reason(DATA)


def test_verify_needs_stake() -> None:
    assert VERIFY in propose_modes(caps(stake=VERIFY_MIN_STAKE_UNITS)).proposed
    plan = propose_modes(caps(stake=VERIFY_MIN_STAKE_UNITS - 1))
    assert plan.reason(VERIFY) == "needs 100 NEURO staked"


def test_inference_needs_an_interactive_tier() -> None:
    assert INFERENCE in propose_modes(caps(tier=SpeedTier.T3)).proposed
    assert INFERENCE not in propose_modes(caps(tier=SpeedTier.T4)).available


def test_toggles_override_the_proposal_but_cannot_enable_the_impossible() -> None:
    plan = propose_modes(caps(tier=SpeedTier.T2, stake=0))
    assert apply_toggles(plan, {DATA: False}) == tuple(m for m in plan.proposed if m != DATA)
    assert ASYNC in apply_toggles(plan, {ASYNC: True})
    with pytest.raises(ModeNotAvailable, match="needs 100 NEURO staked"):
        apply_toggles(plan, {VERIFY: True})
    with pytest.raises(ModeNotAvailable, match="unknown"):
        apply_toggles(plan, {"mining": True})


def test_explicit_modes_are_exactly_those_given() -> None:
    plan = propose_modes(caps(tier=SpeedTier.T1))
    assert explicit_modes(plan, (DATA,)) == (DATA,)


@given(
    tier=st.sampled_from(list(SpeedTier)), layers=st.integers(0, 100), full=st.booleans(),
    disk=st.integers(0, 10**13), stake=st.integers(0, 10**12),
)
def test_every_node_contributes_something_unless_it_can_do_nothing(tier, layers, full, disk, stake) -> None:
    plan = propose_modes(caps(tier, layers, full, disk, stake))
    assert set(plan.proposed) <= set(plan.available)
    assert set(plan.available).isdisjoint(dict(plan.unavailable))
    assert set(plan.available) | set(dict(plan.unavailable)) == set(MODES)
    if plan.available:
        assert plan.proposed
