"""The wallet's side of the engine contract: queries and value-moving commands as plain data.

The UI reads these shapes through ``app/ui/records.py`` (one strict reader per answer). Every
command that moves value needs the wallet password, or a session the volunteer unlocked with it;
the node's own key, unlocked at start for signing proofs, is never used for the volunteer's
transfers, stakes or votes.
"""

from __future__ import annotations

import time
from typing import Any

from app.node.economics.constants import EconomicsConfig
from app.node.economics.governance import Phase, Proposal
from app.node.economics.ledger import Ledger
from app.wallet.errors import WalletError
from app.wallet.wallet import Wallet


def wallet_summary(wallet: Wallet, unlocked: bool) -> dict[str, Any]:
    balance = wallet.balance()
    return {"address": wallet.address, "available_units": balance.available, "staked_units": balance.staked,
            "pending_units": balance.pending, "unlocked": unlocked}


def history_rows(ledger: Ledger, address: str, limit: int = 500) -> list[dict[str, Any]]:
    rows = []
    for entry in ledger.history(address, limit=limit):
        status, _reason = ledger.record_status(entry.record_id)
        rows.append({"time": entry.timestamp_ms / 1000, "kind": entry.kind, "amount_units": entry.amount,
                     "fee_units": 0, "counterparty": entry.detail if entry.kind == "transfer" else "",
                     "status": status if status != "unknown" else "applied", "id": entry.record_id})
    return rows


def earning_rows(ledger: Ledger, address: str) -> list[dict[str, Any]]:
    """Minted rewards per UTC day and kind of work (the wallet page's chart)."""
    totals: dict[tuple[str, str], int] = {}
    for entry in ledger.history(address, limit=10**9, kinds=("reward",)):
        day = time.strftime("%Y-%m-%d", time.gmtime(entry.timestamp_ms / 1000))
        totals[(day, entry.detail)] = totals.get((day, entry.detail), 0) + entry.amount
    return [{"day": day, "kind": kind, "units": units} for (day, kind), units in sorted(totals.items())]


def proposal_phase(proposal: Proposal, config: EconomicsConfig, now_ms: int) -> tuple[str, float]:
    """The phase the clock implies now (the ledger settles it at the next record) and its end."""
    opens, closes = proposal.voting_opens(config), proposal.voting_closes(config)
    if proposal.phase is Phase.DISCUSSION and now_ms < opens:
        return "discussion", opens / 1000
    if proposal.phase in (Phase.DISCUSSION, Phase.VOTING) and now_ms < closes:
        return "voting", closes / 1000
    if proposal.phase in (Phase.DISCUSSION, Phase.VOTING):
        return "counting", 0.0  # closed; the tally lands with the next settlement
    if proposal.phase is Phase.APPROVED:
        return "approved", proposal.implementation_at(config) / 1000
    return proposal.phase.value, 0.0


def proposal_rows(ledger: Ledger, now_ms: int) -> list[dict[str, Any]]:
    config = ledger.config
    supply = ledger.totals().get("staked", 0)
    rows = []
    for proposal in ledger.proposals():
        phase, ends = proposal_phase(proposal, config, now_ms)
        yes, no = proposal.approve_weight, proposal.reject_weight
        if phase in ("discussion", "voting"):  # live tally from current stakes
            stakes = {voter: ledger.balance(voter).staked for voter in proposal.votes}
            yes = sum(s for v, s in stakes.items() if proposal.votes[v])
            no = sum(s for v, s in stakes.items() if not proposal.votes[v])
        rows.append({
            "id": proposal.proposal_id, "title": proposal.title, "phase": phase, "phase_ends_at": ends,
            "yes_weight": yes, "no_weight": no, "staked_supply": max(supply, proposal.total_staked),
            "quorum_weight": int(max(supply, proposal.total_staked) * config.quorum_threshold),
            "merges": [[a.hex(), b.hex()] for a, b in proposal.merges], "proposer": proposal.author,
            "stake_units": config.proposal_stake,
        })
    return rows


class WalletSession:
    """The volunteer's unlocked-or-not wallet inside the node (auto-lock is the UI's job)."""

    def __init__(self, wallet: Wallet) -> None:
        self.wallet = wallet
        self.unlocked = False

    def command(self, action: str, args: dict[str, Any]) -> Any:
        if action == "unlock":
            self.wallet.unlock(args.get("password"))
            self.unlocked = True
            return True
        if action == "lock":
            self.wallet.lock()
            self.unlocked = False
            return True
        password = args.get("password")
        if password is not None or not self.unlocked:
            self.wallet.unlock(password)
        try:
            return self._act(action, args).record_id
        finally:
            if not self.unlocked:
                self.wallet.lock()

    def _act(self, action: str, args: dict[str, Any]) -> Any:
        try:
            if action == "send":
                return self.wallet.send(str(args["to"]), int(args["amount_units"]), _optional_int(args, "fee_units"))
            if action == "stake":
                return self.wallet.stake(int(args["amount_units"]))
            if action == "unstake":
                return self.wallet.unstake(int(args["amount_units"]))
            if action == "vote":
                return self.wallet.vote(str(args["proposal_id"]), bool(args["approve"]))
            if action == "propose":
                merges = [(_token(a), _token(b)) for a, b in args["merges"]]
                return self.wallet.propose_merges(str(args.get("title", "")), merges)
        except KeyError as exc:
            raise WalletError(f"the {action} request lacks '{exc.args[0]}'") from None
        except (TypeError, ValueError) as exc:
            raise WalletError(f"the {action} request is malformed: {exc}") from None
        raise WalletError(f"unknown wallet action '{action}'")


def _optional_int(args: dict[str, Any], key: str) -> int | None:
    return None if args.get(key) is None else int(args[key])


def _token(piece: Any) -> bytes:
    if isinstance(piece, bytes):
        return piece
    if isinstance(piece, str):
        return bytes.fromhex(piece)
    raise ValueError(f"merge side {piece!r} must be token bytes or hex")
