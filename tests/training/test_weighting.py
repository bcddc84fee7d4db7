from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.node.training.weighting import STALE_FRESHNESS, contribution_weight, freshness

HOUR, DAY, WEEK = 3600.0, 86400.0, 7 * 86400.0
ages = st.floats(min_value=-1e3, max_value=1e9, allow_nan=False)
counts = st.integers(min_value=0, max_value=10**9)


@pytest.mark.parametrize("age,expected", [
    (0.0, 1.0), (HOUR - 1, 1.0), (HOUR, 0.9), (DAY - 1, 0.9), (DAY, 0.7), (WEEK - 1, 0.7),
    (WEEK, STALE_FRESHNESS), (1e9, 0.3),
])
def test_freshness_follows_the_seed_tiers(age, expected):
    assert freshness(age) == expected


def test_future_timestamps_earn_no_more_than_fresh():
    assert freshness(-500.0) == 1.0


def test_nan_age_and_negative_batches_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        freshness(float("nan"))
    with pytest.raises(ValueError, match=">= 0"):
        contribution_weight(-1, 0.0)
    with pytest.raises(ValueError, match="integer"):
        contribution_weight(2.5, 0.0)  # type: ignore[arg-type]


@given(ages, ages)
def test_freshness_never_increases_with_age(a, b):
    young, old = sorted((a, b))
    assert freshness(young) >= freshness(old)


@given(counts, counts, ages)
def test_weight_is_monotone_in_batches(a, b, age):
    few, many = sorted((a, b))
    assert contribution_weight(few, age) <= contribution_weight(many, age)


@given(counts, ages, ages)
def test_weight_is_monotone_in_freshness(batches, a, b):
    young, old = sorted((a, b))
    assert contribution_weight(batches, young) >= contribution_weight(batches, old)


@given(st.integers(min_value=1, max_value=10**6), ages)
def test_weight_is_sqrt_batches_times_freshness(batches, age):
    assert math.isclose(contribution_weight(batches, age), math.sqrt(batches) * freshness(age))
    assert math.isclose(contribution_weight(4 * batches, age), 2 * contribution_weight(batches, age))
