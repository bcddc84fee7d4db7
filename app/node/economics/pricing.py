"""Inference pricing (seed 001, DESIGN.md section 4): price = BASE x demand x speed x reputation.

Each factor comes from something the node measures and is clamped to the seed's range:

* demand 1.0 .. 2.0 from utilisation (busy fraction of the serving slots), smoothed with an
  exponential moving average so one burst does not double the price (original implementation:
  "utilisation-driven with smoothing"); linear in utilisation.
* speed 0.8 .. 1.5 from the measured milliseconds per reference layer, interpolated on a log
  scale between 1000 ms (T5 boundary, 0.8) and 1 ms (a fast T1, 1.5): tiers are bands of a
  log-spaced scale, so equal ratios of speed move the price by equal steps.
* reputation 0.8 .. 1.2 from the node's record on the ledger: 0.8 + 0.4 * a / (a + 10 s + 100)
  with a accepted proofs and s slashes; a new node starts at 0.8 and approaches 1.2 after about
  a thousand clean proofs, and one slash weighs as ten proofs.

The price is locked in a quote when the request arrives (original implementation) and charged
per token actually generated, through ordinary signed transfers as the tokens are served, so the
ledger needs no special rule for inference payments. Amounts are integer micro-NEURO per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.crypto.keys import PrivateKey
from app.node.economics.constants import EconomicsConfig
from app.node.economics.records import Record

PPM = 1_000_000
FAST_MS, SLOW_MS = 1.0, 1000.0
REPUTATION_PRIOR = 100
SLASH_WEIGHT = 10


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def demand_factor(utilisation: float, config: EconomicsConfig) -> float:
    low, high = config.demand_range
    return _clamp(low + (high - low) * _clamp(utilisation, (0.0, 1.0)), config.demand_range)


def speed_factor(ms_per_layer: float, config: EconomicsConfig) -> float:
    low, high = config.speed_range
    ms = _clamp(ms_per_layer, (FAST_MS, SLOW_MS)) if math.isfinite(ms_per_layer) else SLOW_MS
    fraction = math.log(SLOW_MS / ms) / math.log(SLOW_MS / FAST_MS)  # 0 slow .. 1 fast
    return _clamp(low + (high - low) * fraction, config.speed_range)


def reputation_factor(accepted_proofs: int, slashes: int, config: EconomicsConfig) -> float:
    low, high = config.reputation_range
    accepted, slashed = max(accepted_proofs, 0), max(slashes, 0)
    score = accepted / (accepted + SLASH_WEIGHT * slashed + REPUTATION_PRIOR)
    return _clamp(low + (high - low) * score, config.reputation_range)


class DemandMeter:
    """Smoothed utilisation: ``observe(busy_fraction)`` once per measurement interval."""

    def __init__(self, smoothing: float = 0.2) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError("smoothing must be in (0, 1]")
        self.smoothing = smoothing
        self.utilisation = 0.0

    def observe(self, busy_fraction: float) -> float:
        sample = _clamp(busy_fraction, (0.0, 1.0))
        self.utilisation += self.smoothing * (sample - self.utilisation)
        return self.utilisation


def price_per_token(config: EconomicsConfig, *, utilisation: float, ms_per_layer: float,
                    accepted_proofs: int, slashes: int) -> int:
    """micro-NEURO per token, rounded down; never below 1 so a quote is never free."""
    factors = (demand_factor(utilisation, config), speed_factor(ms_per_layer, config),
               reputation_factor(accepted_proofs, slashes, config))
    price = config.inference_base_price
    for factor in factors:
        price = price * round(factor * PPM) // PPM
    return max(price, 1)


@dataclass(frozen=True)
class Quote:
    """A price locked at request time: valid until ``expires_ms`` for at most ``max_tokens``."""

    quote_id: str
    provider: str  # address paid
    price_per_token: int
    max_tokens: int
    expires_ms: int

    def cost(self, tokens: int) -> int:
        if not 0 <= tokens <= self.max_tokens:
            raise ValueError(f"tokens must be between 0 and the quoted maximum of {self.max_tokens}")
        return self.price_per_token * tokens


def charge_record(payer: PrivateKey, config: EconomicsConfig, quote: Quote, tokens: int, *, seq: int,
                  timestamp_ms: int, fee: int | None = None, paid_before: int = 0) -> Record:
    """The payer's signed transfer for tokens ``paid_before + 1 .. tokens`` generated under
    ``quote`` (all of them by default); the memo names the quote and ``tokens``, the count paid
    up to, so each record of a session paid token by token is distinct."""
    if timestamp_ms > quote.expires_ms:
        raise ValueError("quote expired: ask the provider for a new quote")
    if not 0 <= paid_before < tokens:
        raise ValueError(f"nothing to pay: tokens {paid_before + 1} .. {tokens}")
    fee = config.min_transfer_fee if fee is None else fee
    body = {"to": quote.provider, "amount": max(quote.cost(tokens) - quote.cost(paid_before), 1), "fee": fee,
            "memo": f"inference:{quote.quote_id}:{tokens}"}
    return Record.create(payer, "transfer", config.network_id, timestamp_ms, body, seq=seq)
