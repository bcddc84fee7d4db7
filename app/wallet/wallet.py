"""The volunteer's wallet: a thin facade that signs records with the keystore's key and reads and
writes only through the ledger (the Electrum split: no balance is kept here, nothing is cached
that the ledger could contradict). The UI reaches it through the engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.crypto.keys import PrivateKey, is_valid_address
from app.wallet.errors import InsufficientFunds, KeystoreMissing, WalletError
from app.wallet.keystore import Keystore

if TYPE_CHECKING:  # the wallet sits beside the economics package; imported lazily to keep it light
    from app.node.economics.ledger import Balance, Ledger, SubmitResult
    from app.node.economics.state import Entry


class RecordRefused(WalletError):
    """The ledger refused a record this wallet built; ``reason`` is the ledger's."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the ledger refused the transaction: {reason}")
        self.reason = reason


class Wallet:
    """Balance, history, earnings, send, stake and unstake for the key in ``keystore``."""

    def __init__(self, keystore: Keystore, ledger: Ledger, clock: Callable[[], float] = time.time) -> None:
        self.keystore = keystore
        self.ledger = ledger
        self._clock = clock
        self._key: PrivateKey | None = None

    def unlock(self, password: str | None = None) -> str:
        """Unlocks the key for signing; returns the address."""
        self._key = self.keystore.unlock(password)
        return self._key.address

    def lock(self) -> None:
        self._key = None

    @property
    def address(self) -> str:
        if self._key is not None:
            return self._key.address
        address = self.keystore.address
        if address is None:
            raise KeystoreMissing()
        return address

    # --- reads ------------------------------------------------------------------------------

    def balance(self) -> Balance:
        return self.ledger.balance(self.address)

    def history(self, limit: int = 100) -> list[Entry]:
        return self.ledger.history(self.address, limit=limit)

    def earnings(self, by: str = "day") -> dict[str, int]:
        return self.ledger.earnings(self.address, by=by)

    # --- writes -----------------------------------------------------------------------------

    def send(self, to: str, amount: int, fee: int | None = None, memo: str = "") -> SubmitResult:
        """Transfers ``amount`` micro-NEURO to ``to``; the fee defaults to the network minimum."""
        if not is_valid_address(to):
            raise WalletError(f"{to!r} is not a valid NeuroShard address (check for a typo)")
        fee = self.ledger.config.min_transfer_fee if fee is None else fee
        self._require_available(amount + fee)
        return self._submit("transfer", {"to": to, "amount": amount, "fee": fee, "memo": memo})

    def stake(self, amount: int) -> SubmitResult:
        self._require_available(amount)
        return self._submit("stake", {"amount": amount})

    def unstake(self, amount: int) -> SubmitResult:
        if self.balance().staked < amount:
            raise InsufficientFunds("cannot unstake more than is staked")
        return self._submit("unstake", {"amount": amount})

    def propose_merges(self, title: str, merges: list[tuple[bytes, bytes]]) -> SubmitResult:
        """A vocabulary proposal of byte-level merges (locks the proposal stake until the vote ends)."""
        self._require_available(self.ledger.config.proposal_stake)
        return self._submit("proposal", {"title": title, "merges": [[a.hex(), b.hex()] for a, b in merges]})

    def vote(self, proposal_id: str, approve: bool) -> SubmitResult:
        return self._submit("vote", {"proposal_id": proposal_id, "approve": approve})

    def _require_available(self, amount: int) -> None:
        if amount <= 0:
            raise WalletError("amount must be positive")
        available = self.balance().available
        if available < amount:
            raise InsufficientFunds(f"available balance {available} micro-NEURO is less than {amount}")

    def _submit(self, kind: str, body: dict[str, Any]) -> SubmitResult:
        from app.node.economics.records import InvalidRecord, Record

        if self._key is None:
            raise WalletError("wallet is locked: unlock it with the password first")
        now_ms = int(self._clock() * 1000)
        try:
            record = Record.create(self._key, kind, self.ledger.config.network_id, now_ms, body,
                                   seq=self.ledger.next_seq(self._key.address))
        except InvalidRecord as exc:
            raise WalletError(f"cannot build the {kind}: {exc.reason}") from None
        result = self.ledger.submit(record.to_bytes(), now_ms)
        if not result.accepted:
            raise RecordRefused(result.reason)
        status, reason = self.ledger.record_status(result.record_id)
        if status in ("rejected", "conflict"):  # stored, but the ledger's rules refused it
            raise RecordRefused(reason)
        return result
