import json

import pytest

from app.node import hardware
from app.node.hardware import SpeedTier, layers_that_fit, memory_budget_bytes, tier_for_ms


@pytest.mark.parametrize(
    ("ms", "tier"),
    [
        (0.5, SpeedTier.T1), (9.99, SpeedTier.T1), (10.0, SpeedTier.T2), (49.9, SpeedTier.T2),
        (50.0, SpeedTier.T3), (199.9, SpeedTier.T3), (200.0, SpeedTier.T4), (999.0, SpeedTier.T4),
        (1000.0, SpeedTier.T5), (25_000.0, SpeedTier.T5),
    ],
)
def test_tier_thresholds_follow_design_table(ms: float, tier: SpeedTier) -> None:
    assert tier_for_ms(ms) is tier


@pytest.mark.parametrize("bad", [float("nan"), -1.0])
def test_tier_refuses_unusable_measurement(bad: float) -> None:
    with pytest.raises(ValueError):
        tier_for_ms(bad)


def test_cpu_is_measured_not_assumed_t5() -> None:
    """The original benchmark fell back to T5 on every CPU; ours measures a real layer."""
    ms = hardware.measure_ms_per_layer("cpu", repeats=1, budget_s=5)
    assert 1.0 < ms < 60_000
    assert tier_for_ms(ms) is not None


def test_layers_that_fit_reserves_embedding_and_head() -> None:
    assert layers_that_fit(10_000, 1_000) == 10
    assert layers_that_fit(10_000, 1_000, reserved_bytes=2_500) == 7
    assert layers_that_fit(1_000, 2_000) == 0
    assert layers_that_fit(1_000, 500, reserved_bytes=5_000) == 0
    with pytest.raises(ValueError):
        layers_that_fit(1_000, 0)


def test_memory_budget_honours_fraction_and_cap() -> None:
    info = hardware.DeviceInfo("cpu", "x", 16 * 2**30, 16 * 2**30, 4)
    assert memory_budget_bytes(info, 0.5) == 8 * 2**30
    assert memory_budget_bytes(info, 0.5, cap_bytes=2**30) == 2**30


def test_measurement_is_cached_per_device_and_rerun_on_demand(tmp_path, monkeypatch) -> None:
    calls = []

    def fake_measure_ms(device: str, **_: object) -> float:
        calls.append(device)
        return 123.0

    monkeypatch.setattr(hardware, "measure_ms_per_layer", fake_measure_ms)
    first = hardware.measure_or_cached(tmp_path, "cpu")
    assert (first.tier, first.cached) == (SpeedTier.T3, False)
    second = hardware.measure_or_cached(tmp_path, "cpu")
    assert second.cached and second.ms_per_layer == 123.0 and len(calls) == 1
    hardware.measure_or_cached(tmp_path, "cpu", force=True)
    assert len(calls) == 2


def test_damaged_cache_is_ignored(tmp_path) -> None:
    (tmp_path / hardware.CACHE_FILE).write_text("{not json")
    assert hardware.load_cached(tmp_path) is None
    (tmp_path / hardware.CACHE_FILE).write_text(json.dumps({"cache_version": 1, "tier": "T9"}))
    assert hardware.load_cached(tmp_path) is None
