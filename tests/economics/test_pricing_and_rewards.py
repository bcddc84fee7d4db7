import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.node.economics import pricing, rewards
from app.node.economics.constants import EconomicsConfig, neuro
from app.node.economics.records import Record

from .helpers import ALICE, BOB

CFG = EconomicsConfig()
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9)


@given(utilisation=finite, ms=st.floats(min_value=0, max_value=1e7), accepted=st.integers(0, 10**9),
       slashes=st.integers(0, 10**6))
def test_price_stays_within_the_product_of_the_factor_bounds(utilisation, ms, accepted, slashes):
    price = pricing.price_per_token(CFG, utilisation=utilisation, ms_per_layer=ms, accepted_proofs=accepted,
                                    slashes=slashes)
    low = CFG.inference_base_price * 1.0 * 0.8 * 0.8
    high = CFG.inference_base_price * 2.0 * 1.5 * 1.2
    assert math.floor(low) - 1 <= price <= high


def test_price_rises_with_demand_speed_and_reputation():
    def price(u, ms, accepted):
        return pricing.price_per_token(CFG, utilisation=u, ms_per_layer=ms, accepted_proofs=accepted, slashes=0)

    assert price(0.9, 100, 10) > price(0.1, 100, 10)
    assert price(0.5, 5, 10) > price(0.5, 500, 10)
    assert price(0.5, 100, 5000) > price(0.5, 100, 0)
    assert price(0.0, 2000, 0) == 64  # 100 x 1.0 x 0.8 x 0.8: the cheapest quote
    assert price(1.0, 0.5, 10**9) == 360  # 100 x 2.0 x 1.5 x 1.2: the dearest quote


def test_slashes_lower_reputation():
    assert pricing.reputation_factor(500, 10, CFG) < pricing.reputation_factor(500, 0, CFG)


def test_demand_meter_smooths_bursts():
    meter = pricing.DemandMeter(smoothing=0.2)
    assert meter.observe(1.0) == pytest.approx(0.2)
    for _ in range(50):
        meter.observe(1.0)
    assert meter.utilisation == pytest.approx(1.0, abs=1e-4)


def test_charge_is_a_signed_transfer_at_the_locked_price():
    quote = pricing.Quote(quote_id="q1", provider=BOB.address, price_per_token=120, max_tokens=1000,
                          expires_ms=10_000)
    record = pricing.charge_record(ALICE, CFG, quote, 250, seq=4, timestamp_ms=9_000)
    parsed = Record.from_bytes(record.to_bytes())
    assert parsed.body["amount"] == 30_000 and parsed.body["to"] == BOB.address
    assert parsed.body["memo"] == "inference:q1:250"
    with pytest.raises(ValueError, match="expired"):
        pricing.charge_record(ALICE, CFG, quote, 1, seq=5, timestamp_ms=10_001)
    with pytest.raises(ValueError, match="quoted maximum"):
        quote.cost(1001)


@given(st.integers(1, 10**15), st.integers(1, 10**6))
def test_integer_log2_matches_floating_point_within_a_micro_unit(num, den):
    num = num + den
    assert abs(rewards.log2_ppm(num, den) - math.log2(num / den) * 1e6) <= 2


def test_stake_multiplier_follows_the_documented_curve():
    assert rewards.stake_multiplier_ppm(0, CFG) == 1_000_000
    assert rewards.stake_multiplier_ppm(neuro(1000), CFG) == 1_100_000
    assert rewards.stake_multiplier_ppm(neuro(3000), CFG) == 1_200_000


def test_role_and_stake_multiply_the_base_reward():
    body = {"proof_kind": "training", "batches": 10, "layers": 4, "async_mode": False, "role": "validator",
            "uptime_ms": 0, "samples": 0, "tokens": 0}
    base = 10 * 4 * neuro(0.0005)
    assert rewards.proof_reward(body, 0, CFG) == base * 13 // 10
    assert rewards.proof_reward(body, neuro(1000), CFG) == base * 13 // 10 * 11 // 10


def test_daily_limit_clips_rewards():
    assert rewards.clip_daily(neuro(10), CFG.max_reward_per_day - neuro(4), CFG) == neuro(4)
    assert rewards.clip_daily(neuro(10), CFG.max_reward_per_day, CFG) == 0


def test_epoch_cap_grows_with_the_square_root_of_active_nodes():
    assert rewards.epoch_cap(4, CFG) == 2 * rewards.epoch_cap(1, CFG)
    assert rewards.scale_to_cap({"a": 300, "b": 100}, 200) == {"a": 150, "b": 50}
