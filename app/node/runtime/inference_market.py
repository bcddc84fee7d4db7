"""The inference market on the serving side: a quote locked at Open, payment token by token.

- **Quote** (seed 001, economics/pricing.py): price per token = BASE x demand x speed x
  reputation, demand from this node's real utilisation (the share of its session slots in use,
  smoothed by pricing.DemandMeter), speed from its measured time per layer, reputation from its
  accepted proofs and slashes on the ledger. The quote is locked for the whole session.
- **Admission**: before any work, the caller's available balance on this node's ledger must cover
  the quote for every token the session may generate plus a transfer fee per token; otherwise
  Open is refused PERMISSION_DENIED with the price, the cost and the balance in the message.
- **Payment** as tokens are served: with each step the caller hands a signed ledger transfer for
  the tokens served so far and not yet paid (price x those tokens; the memo names the quote and
  the count paid up to, economics/pricing.charge_record) to this node's address; it is checked
  field by field and submitted to the ledger (gossip spreads it). The service serves a new token
  only once every earlier one is paid, so it gives at most one token on credit; Close pays the
  last. A caller that closes without paying, or lets a session expire unpaid, is refused new
  sessions here.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from app.crypto.keys import PublicKey
from app.node.economics.constants import EconomicsConfig
from app.node.economics.ledger import Ledger
from app.node.economics.pricing import DemandMeter, Quote, price_per_token
from app.node.economics.records import InvalidRecord, Record
from app.node.runtime.inference_protocol import refuse

QUOTE_TTL_MS = 3_600_000
"""A quote outlives any session (idle expiry is minutes); the ledger checks nothing about it."""
MAX_DEBTORS = 4096


@dataclass
class InferenceMarket:
    ledger: Ledger
    config: EconomicsConfig
    provider: str
    """This node's ledger address: what payments go to."""
    ms_per_layer: Callable[[], float]
    reputation: Callable[[], tuple[int, int]] = lambda: (0, 0)
    """(accepted proofs, slashes) of this node on the ledger."""
    clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    demand: DemandMeter = field(default_factory=DemandMeter)
    _debtors: set[str] = field(default_factory=set)

    def quote(self, utilisation: float, max_tokens: int) -> Quote:
        """The locked price for a new session, with demand from the slots in use now."""
        accepted, slashes = self.reputation()
        price = price_per_token(self.config, utilisation=self.demand.observe(utilisation),
                                ms_per_layer=self.ms_per_layer(), accepted_proofs=accepted, slashes=slashes)
        return Quote(secrets.token_hex(8), self.provider, price, max_tokens, self.clock_ms() + QUOTE_TTL_MS)

    def is_own(self, caller_key: bytes) -> bool:
        """Whether the caller is this node itself (its "Try the model" page through its own stage):
        a node does not charge itself, so such a session is served without a quote."""
        return PublicKey(caller_key).address == self.provider

    def admit(self, caller_key: bytes, quote: Quote) -> str:
        """The caller's address, when its balance covers the quote; refused before any work."""
        payer = PublicKey(caller_key).address
        if payer in self._debtors:
            raise refuse(f"{payer} left a session here unpaid; pay it before opening another",
                         grpc.StatusCode.PERMISSION_DENIED)
        need = quote.cost(quote.max_tokens) + quote.max_tokens * self.config.min_transfer_fee  # a record per token
        have = self.ledger.balance(payer).available
        if have < need:
            raise refuse(f"insufficient balance: the price is {quote.price_per_token} micro-NEURO per token, "
                         f"{quote.max_tokens} tokens cost up to {need} with the fee, {payer} has {have} available",
                         grpc.StatusCode.PERMISSION_DENIED)
        return payer

    def pay(self, payer: str, quote: Quote, paid_before: int, tokens: int, payment: bytes) -> int:
        """Check and submit the payer's transfer for tokens ``paid_before + 1 .. tokens``; returns the
        amount it moved. A missing or wrong payment makes the payer a debtor here, and is refused."""
        if tokens <= paid_before:
            return 0
        expected = quote.cost(tokens) - quote.cost(paid_before)
        try:
            record = Record.from_bytes(payment)
            body = record.body
            problem = None
            if record.kind != "transfer" or record.author_address != payer:
                problem = "the payment is not a transfer signed by the session's caller"
            elif body.get("to") != self.provider or body.get("amount") != expected:
                problem = (f"the payment for tokens {paid_before + 1}-{tokens} must move exactly {expected} "
                           f"micro-NEURO to {self.provider}")
            elif body.get("memo") != f"inference:{quote.quote_id}:{tokens}":
                problem = f"the payment's memo must name quote {quote.quote_id} and {tokens} tokens"
        except (InvalidRecord, ValueError, KeyError, TypeError) as exc:
            problem = f"the payment does not parse: {str(exc)[:200]}"
        if problem is None:
            result = self.ledger.submit(payment, self.clock_ms())
            if not result.accepted and result.status != "duplicate":
                problem = f"the ledger refused the payment: {result.reason}"
        if problem is not None:
            self.owes(payer)
            raise refuse(problem, grpc.StatusCode.PERMISSION_DENIED)
        return expected

    def owes(self, payer: str) -> None:
        if len(self._debtors) < MAX_DEBTORS:
            self._debtors.add(payer)
