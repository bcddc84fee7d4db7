from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from app.node.training.aggregation import (
    AggregationError,
    Contribution,
    aggregate,
    trim_count,
)

SHAPE = (3, 4)
finite = st.floats(min_value=-100, max_value=100, allow_nan=False, width=32)


def honest_values(n: int):
    return st.lists(st.lists(finite, min_size=12, max_size=12), min_size=n, max_size=n)


def _contrib(name: str, values, batches: int = 1, age: float = 0.0) -> Contribution:
    return Contribution(name, {"w": torch.tensor(values, dtype=torch.float32).reshape(SHAPE),
                               "b": torch.tensor(values[:4], dtype=torch.float32)}, batches, age)


def _poison(kind: str, honest: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if kind == "scaled":
        return honest * 100
    if kind == "sign_flip":
        return -honest * 10
    return torch.randn(honest.shape, generator=gen) * 1e4


@settings(max_examples=60, deadline=None)
@given(honest_values(5), st.lists(st.integers(1, 1000), min_size=5, max_size=5), st.randoms())
def test_result_does_not_depend_on_contribution_order(values, batches, rnd):
    contributions = [_contrib(f"n{i}", v, b) for i, (v, b) in enumerate(zip(values, batches, strict=True))]
    shuffled = list(contributions)
    rnd.shuffle(shuffled)
    for method in ("trimmed_mean", "mean", "median"):
        a = aggregate(contributions, method=method, norm_outlier_factor=math.inf)
        b = aggregate(shuffled, method=method, norm_outlier_factor=math.inf)
        assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


@settings(max_examples=80, deadline=None)
@given(st.integers(3, 9).flatmap(lambda n: st.tuples(honest_values(n), st.integers(1, 3))),
       st.sampled_from(["scaled", "sign_flip", "random"]), st.integers(1, 10**6), st.integers(0, 2**31))
def test_poisoned_minority_cannot_leave_the_honest_range(data, kind, liar_batches, seed):
    values, bad_count = data
    n = len(values) + bad_count
    trim = bad_count / n  # enough trimming for the bad ones: ceil(trim * n) = bad_count
    if trim_count(n, trim) < bad_count:
        return  # a majority of poisoners is out of scope for any robust mean
    gen = torch.Generator().manual_seed(seed)
    honest = [_contrib(f"h{i}", v) for i, v in enumerate(values)]
    bad = []
    for j in range(bad_count):
        c = honest[j % len(honest)]
        bad.append(Contribution(f"bad{j}", {k: _poison(kind, t, gen) for k, t in c.tensors.items()},
                                liar_batches))  # a liar may also claim many batches
    result = aggregate(honest + bad, trim_fraction=trim, norm_outlier_factor=math.inf)
    for name, out in result.tensors.items():
        stack = torch.stack([c.tensors[name] for c in honest])
        assert bool((out >= stack.min(0).values - 1e-4).all()) and bool((out <= stack.max(0).values + 1e-4).all())


@settings(max_examples=40, deadline=None)
@given(honest_values(4), st.lists(st.integers(1, 100), min_size=4, max_size=4))
def test_trimmed_mean_with_no_trimming_is_the_weighted_mean(values, batches):
    contributions = [_contrib(f"n{i}", v, b) for i, (v, b) in enumerate(zip(values, batches, strict=True))]
    got = aggregate(contributions, trim_fraction=0.0, norm_outlier_factor=math.inf).tensors["w"]
    w = torch.tensor([math.sqrt(b) for b in batches], dtype=torch.float64)
    stack = torch.stack([c.tensors["w"].double() for c in contributions])
    expected = (stack * w[:, None, None]).sum(0) / w.sum()
    assert torch.allclose(got.double(), expected, atol=1e-5)


def test_fresher_and_busier_contributions_pull_harder():
    a = Contribution("a", {"w": torch.zeros(2)}, batches=100, age_s=0.0)
    b = Contribution("b", {"w": torch.ones(2)}, batches=1, age_s=30 * 86400.0)
    out = aggregate([a, b], method="mean").tensors["w"]
    expected = 0.3 / (10 * 1.0 + 0.3)  # sqrt(1)·0.3 against sqrt(100)·1.0
    assert torch.allclose(out, torch.full((2,), expected))


def test_invalid_contributions_are_rejected_with_reasons():
    good = [_contrib(f"n{i}", [float(i + j) for j in range(12)]) for i in range(4)]
    nan = _contrib("nan", [float("nan")] * 12)
    inf = _contrib("inf", [float("inf")] * 12)
    shape = Contribution("shape", {"w": torch.zeros(4, 3), "b": torch.zeros(4)}, 1)
    keys = Contribution("keys", {"w": torch.zeros(SHAPE)}, 1)
    dtype = Contribution("dtype", {"w": torch.zeros(SHAPE, dtype=torch.float64), "b": torch.zeros(4)}, 1)
    lazy = Contribution("lazy", good[0].tensors, 0)
    dup = Contribution("n1", good[0].tensors, 1)
    huge = _contrib("huge", [1e6] * 12)
    result = aggregate(good + [nan, inf, shape, keys, dtype, lazy, dup, huge])
    assert result.accepted == ["n0", "n1", "n2", "n3"]
    reasons = dict(result.rejected)
    assert "NaN or Inf" in reasons["nan"] and "NaN or Inf" in reasons["inf"]
    assert "shape" in reasons["shape"]
    assert "missing" in reasons["keys"]
    assert "dtype" in reasons["dtype"]
    assert "positive" in reasons["lazy"]
    assert "duplicate" in reasons["n1"]
    assert "median" in reasons["huge"]


def test_a_malformed_first_contribution_does_not_define_the_layout():
    bad_first = Contribution("odd", {"x": torch.zeros(7)}, 1)
    good = [_contrib(f"n{i}", [1.0] * 12) for i in range(3)]
    result = aggregate([bad_first, *good])
    assert result.accepted == ["n0", "n1", "n2"] and result.rejected[0][0] == "odd"


def test_all_rejected_raises_with_every_reason():
    with pytest.raises(AggregationError, match="nan: .*NaN"):
        aggregate([_contrib("nan", [float("nan")] * 12)])
    with pytest.raises(AggregationError, match="none were given"):
        aggregate([])


def test_median_and_bad_arguments():
    cs = [_contrib(f"n{i}", [float(i)] * 12) for i in range(4)]
    assert torch.allclose(aggregate(cs, method="median").tensors["w"], torch.full(SHAPE, 1.5))
    with pytest.raises(ValueError, match="unknown aggregation method"):
        aggregate(cs, method="krum")
    with pytest.raises(ValueError, match="trim_fraction"):
        aggregate(cs, trim_fraction=0.5)


@pytest.mark.parametrize("n,fraction,k", [(1, 0.1, 0), (2, 0.1, 0), (3, 0.1, 1), (4, 0.1, 1), (10, 0.1, 1),
                                          (11, 0.1, 2), (4, 0.0, 0), (5, 0.45, 2)])
def test_trim_count_trims_at_least_one_from_three_and_keeps_one(n, fraction, k):
    assert trim_count(n, fraction) == k
