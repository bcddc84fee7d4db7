"""Pure formatting and parsing helpers shared by the pages (no Qt, easy to test).

Amounts are integer micro-NEURO on the node (1 NEURO = 10**6 units, app/node/values.py); the UI
parses what a volunteer types with ``Decimal`` so that "0.1" is exactly 100000 units.
"""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation

from app.node.events import NodeState
from app.node.values import UNITS_PER_NEURO


class AmountError(ValueError):
    """What the volunteer typed is not a usable amount; the message says why."""


def format_neuro(units: int, digits: int = 4) -> str:
    """``1234567`` -> ``"1.2346 NEURO"``."""
    return f"{units / UNITS_PER_NEURO:,.{digits}f} NEURO"


def parse_neuro(text: str, *, allow_zero: bool = False) -> int:
    """``"1.5"`` -> 1500000 units; refuses negatives, more than 6 decimals, garbage."""
    cleaned = text.strip().replace(",", "").removesuffix("NEURO").strip()
    if not cleaned:
        raise AmountError("enter an amount, for example 1.5")
    try:
        value = Decimal(cleaned)
    except InvalidOperation as exc:
        raise AmountError(f"'{text}' is not a number") from exc
    if not value.is_finite():
        raise AmountError(f"'{text}' is not a number")
    units = value * UNITS_PER_NEURO
    if units != units.to_integral_value():
        raise AmountError("NEURO has at most 6 decimals")
    if units < 0 or (units == 0 and not allow_zero):
        raise AmountError("the amount must be more than 0")
    return int(units)


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def format_duration(seconds: float) -> str:
    """Countdown text: ``"2 d 3 h"``, ``"4 h 5 min"``, ``"3 min 20 s"``, ``"ended"``."""
    if seconds <= 0:
        return "ended"
    s = int(seconds)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def countdown(ends_at: float, now: float | None = None) -> str:
    return format_duration(ends_at - (time.time() if now is None else now))


# Words and colours for the node states: a volunteer reads the word, the colour is a glance cue
# (green working, amber waiting/paused, red error, grey off).
STATE_WORDS: dict[NodeState, str] = {
    NodeState.STOPPED: "Stopped",
    NodeState.STARTING: "Starting",
    NodeState.MEASURING: "Measuring this computer",
    NodeState.JOINING: "Joining the network",
    NodeState.TRAINING: "Training",
    NodeState.PAUSED: "Paused",
    NodeState.STOPPING: "Stopping",
    NodeState.ERROR: "Error",
}
STATE_COLOURS: dict[NodeState, str] = {
    NodeState.STOPPED: "#808080",
    NodeState.STARTING: "#d89b00",
    NodeState.MEASURING: "#d89b00",
    NodeState.JOINING: "#d89b00",
    NodeState.TRAINING: "#2e9d4a",
    NodeState.PAUSED: "#3b7dd8",
    NodeState.STOPPING: "#808080",
    NodeState.ERROR: "#d0342c",
}


def short_id(node_id: str, keep: int = 10) -> str:
    return node_id if len(node_id) <= keep + 1 else node_id[:keep] + "…"
