"""The reward schedule: what one accepted proof earns and how much is minted per epoch.

Every function here is pure and uses integer arithmetic only. Floats would be simpler, but
``math.log2`` may differ in the last bit between platforms' libm, and one differing micro-NEURO
makes two honest nodes disagree on the state hash. Multipliers are therefore fixed-point
parts-per-million (``PPM``) and logarithms are computed bit by bit on integers.

Schedule (numbers in ``constants.EconomicsConfig``, sources in its docstrings):

* base reward per kind of work: uptime per minute, training per batch per layer held (lower in
  async mode, whose gradients arrive stale), data per sample served, inference per 1000 tokens,
  verification per spot-check performed;
* x role multiplier (1 + role bonus) x stake multiplier (1 + 0.1 * log2(1 + stake / 1000 NEURO));
* per epoch, the sum minted for all accepted proofs is capped at
  ``epoch_emission_per_node * sqrt(active nodes)``: total emission grows with the network, so a
  bigger network pays more in total, but each node's share of the cap falls as 1/sqrt(N),
  which bounds inflation as volunteers join while small networks still pay in full. When the
  cap binds, every proof of the epoch is scaled down by the same factor (pro rata, rounded down);
* per node, at most ``max_reward_per_day`` is minted per UTC day (DESIGN.md section 4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from app.node.economics.constants import EconomicsConfig

PPM = 1_000_000
_LOG_FRAC_BITS = 24


def log2_ppm(numerator: int, denominator: int) -> int:
    """floor(log2(numerator / denominator) * 1e6) for numerator >= denominator > 0, integers only."""
    if denominator <= 0 or numerator < denominator:
        raise ValueError("log2_ppm needs numerator >= denominator > 0")
    integer = numerator.bit_length() - denominator.bit_length()
    if (denominator << integer) > numerator:
        integer -= 1
    # mantissa m in [1, 2) as fixed point with _LOG_FRAC_BITS bits, then square-and-compare.
    one = 1 << _LOG_FRAC_BITS
    mantissa = (numerator << _LOG_FRAC_BITS) // (denominator << integer)
    fraction = 0
    for bit in range(_LOG_FRAC_BITS - 1, -1, -1):
        mantissa = (mantissa * mantissa) >> _LOG_FRAC_BITS
        if mantissa >= 2 * one:
            mantissa >>= 1
            fraction |= 1 << bit
    return integer * PPM + (fraction * PPM >> _LOG_FRAC_BITS)


def stake_multiplier_ppm(staked: int, config: EconomicsConfig) -> int:
    """1 + 0.1 * log2(1 + staked / 1000 NEURO), in ppm: 0 stake -> 1.0, 1000 NEURO -> 1.1."""
    scale = config.stake_bonus_scale_units
    bonus_ppm = round(config.stake_bonus_per_doubling * PPM)
    return PPM + bonus_ppm * log2_ppm(scale + max(staked, 0), scale) // PPM


def role_multiplier_ppm(role: str, config: EconomicsConfig) -> int:
    return PPM + round(config.role_bonus.get(role, 0.0) * PPM)


def base_reward(body: Mapping[str, Any], config: EconomicsConfig) -> int:
    """Reward before multipliers for one proof body (fields as in ``records.SCHEMAS['proof']``)."""
    rates = config.rewards
    kind = body["proof_kind"]
    if kind == "uptime":
        return rates["uptime_per_minute"] * body["uptime_ms"] // 60_000
    if kind == "training":
        rate = rates["async_training_per_batch_layer"] if body["async_mode"] else rates["training_per_batch_layer"]
        return rate * body["batches"] * body["layers"]
    if kind == "data":
        return rates["data_per_sample"] * body["samples"]
    if kind == "inference":
        return rates["inference_per_1000_tokens"] * body["tokens"] // 1000
    if kind == "verification":
        return rates["verification_per_check"] * body["samples"]
    if kind == "async":
        return rates["async_training_per_batch_layer"] * body["batches"] * body["layers"]
    raise ValueError(f"unknown proof kind {kind!r}")


def proof_reward(body: Mapping[str, Any], staked: int, config: EconomicsConfig) -> int:
    """What an accepted proof earns before the epoch and daily caps, in micro-NEURO."""
    amount = base_reward(body, config)
    amount = amount * role_multiplier_ppm(body["role"], config) // PPM
    return amount * stake_multiplier_ppm(staked, config) // PPM


def epoch_cap(active_nodes: int, config: EconomicsConfig) -> int:
    """Most micro-NEURO minted in one epoch: emission_per_node * sqrt(active nodes), rounded down."""
    if active_nodes <= 0:
        return 0
    return config.epoch_emission_per_node * math.isqrt(active_nodes * PPM * PPM) // PPM


def scale_to_cap(rewards: Mapping[str, int], cap: int) -> dict[str, int]:
    """Pro-rata scaling of an epoch's rewards so their sum does not exceed ``cap`` (rounded down)."""
    total = sum(rewards.values())
    if total <= cap:
        return dict(rewards)
    return {key: value * cap // total for key, value in rewards.items()}


def clip_daily(amount: int, already_minted_today: int, config: EconomicsConfig) -> int:
    """Clips a node's reward so it never earns more than ``max_reward_per_day`` in one UTC day."""
    room = max(config.max_reward_per_day - already_minted_today, 0)
    return min(amount, room)
