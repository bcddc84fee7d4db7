"""Strict readers for the node's query answers (plain dicts and lists from the engine).

The engine answers ``Query`` and ``WalletCommand`` with plain data. The pages read it through
these functions so a missing or mistyped field becomes a clear message, never a crash deep in a
table model. Expected shapes (the economy service's side of the contract):

- wallet:   {"address": str, "available_units": int, "staked_units": int, "pending_units": int,
             "validated_units": int (optional), "unlocked": bool (optional)}
- history:  [{"time": float, "kind": str, "amount_units": int, "fee_units": int, "counterparty": str,
              "status": str, "id": str}, ...]
- earnings: [{"day": "YYYY-MM-DD", "kind": str, "units": int}, ...]
- proposals: [{"id": str, "phase": str, "phase_ends_at": float, "yes_weight": int, "no_weight": int,
               "quorum_weight": int, "staked_supply": int, "merges": [[bytes, bytes] | [hex, hex] | [id, id], ...], "proposer": str,
               "stake_units": int, "examples": [str, ...], "title": str}, ...]
- peers:    [{"node_id": str, "address": str, "tier": str, "layers": [first, last], "latency_ms": float}]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class BadAnswer(ValueError):
    """The node answered with data the UI cannot read; the message names the field."""


def _field(row: Any, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if not isinstance(row, dict):
        raise BadAnswer(f"expected a record, got {type(row).__name__}")
    if key not in row:
        if default is ...:
            raise BadAnswer(f"the node's answer lacks '{key}'")
        return default
    value = row[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadAnswer(f"'{key}' should be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _rows(answer: Any, what: str) -> list[Any]:
    if not isinstance(answer, (list, tuple)):
        raise BadAnswer(f"the node's {what} answer is not a list")
    return list(answer)


@dataclass(frozen=True)
class WalletInfo:
    address: str
    available_units: int
    staked_units: int
    pending_units: int
    validated_units: int
    unlocked: bool


def read_wallet(answer: Any) -> WalletInfo:
    return WalletInfo(
        address=_field(answer, "address", str),
        available_units=_field(answer, "available_units", int),
        staked_units=_field(answer, "staked_units", int),
        pending_units=_field(answer, "pending_units", int),
        validated_units=_field(answer, "validated_units", int, 0),
        unlocked=_field(answer, "unlocked", bool, False),
    )


@dataclass(frozen=True)
class HistoryRow:
    time: float
    kind: str
    amount_units: int
    fee_units: int
    counterparty: str
    status: str
    record_id: str


def read_history(answer: Any) -> list[HistoryRow]:
    return [
        HistoryRow(
            time=_field(row, "time", float), kind=_field(row, "kind", str),
            amount_units=_field(row, "amount_units", int), fee_units=_field(row, "fee_units", int, 0),
            counterparty=_field(row, "counterparty", str, ""), status=_field(row, "status", str, ""),
            record_id=_field(row, "id", str, ""),
        )
        for row in _rows(answer, "history")
    ]


@dataclass(frozen=True)
class EarningRow:
    day: str
    kind: str
    units: int


def read_earnings(answer: Any) -> list[EarningRow]:
    return [
        EarningRow(_field(row, "day", str), _field(row, "kind", str), _field(row, "units", int))
        for row in _rows(answer, "earnings")
    ]


@dataclass(frozen=True)
class ProposalInfo:
    proposal_id: str
    phase: str
    phase_ends_at: float
    yes_weight: int
    no_weight: int
    quorum_weight: int
    staked_supply: int
    merges: tuple[tuple[Any, Any], ...]
    proposer: str
    stake_units: int
    examples: tuple[str, ...]
    title: str = ""


def _merges(value: Any) -> tuple[tuple[Any, Any], ...]:
    if not isinstance(value, (list, tuple)):
        raise BadAnswer("'merges' should be a list of pairs")
    out = []
    for pair in value:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise BadAnswer(f"merge {pair!r} is not a pair")
        out.append((pair[0], pair[1]))
    return tuple(out)


def read_proposals(answer: Any) -> list[ProposalInfo]:
    return [
        ProposalInfo(
            proposal_id=_field(row, "id", str), phase=_field(row, "phase", str),
            phase_ends_at=_field(row, "phase_ends_at", float, 0.0),
            yes_weight=_field(row, "yes_weight", int, 0), no_weight=_field(row, "no_weight", int, 0),
            quorum_weight=_field(row, "quorum_weight", int, 0),
            staked_supply=_field(row, "staked_supply", int, 0),
            merges=_merges(_field(row, "merges", (list, tuple), [])),
            proposer=_field(row, "proposer", str, ""), stake_units=_field(row, "stake_units", int, 0),
            examples=tuple(str(e) for e in _field(row, "examples", (list, tuple), [])),
            title=_field(row, "title", str, ""),
        )
        for row in _rows(answer, "proposals")
    ]


@dataclass(frozen=True)
class PeerInfo:
    node_id: str
    address: str
    tier: str
    layers: tuple[int, int]
    latency_ms: float


def read_peers(answer: Any) -> list[PeerInfo]:
    peers = []
    for row in _rows(answer, "peers"):
        layers = _field(row, "layers", (list, tuple), (0, 0))
        if len(layers) != 2 or not all(isinstance(v, int) for v in layers):
            raise BadAnswer(f"'layers' should be [first, last], got {layers!r}")
        peers.append(PeerInfo(
            node_id=_field(row, "node_id", str), address=_field(row, "address", str, ""),
            tier=_field(row, "tier", str, ""), layers=(layers[0], layers[1]),
            latency_ms=_field(row, "latency_ms", float, 0.0),
        ))
    return peers
