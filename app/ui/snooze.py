"""Snooze: pause the node until a chosen time (the engine resumes it then on its own).

Offered in the tray menu and on the dashboard, so a volunteer without a tray (some Linux
desktops) can snooze too.
"""

from __future__ import annotations

import datetime as dt
import time

CHOICES = (("1h", "For 1 hour"), ("4h", "For 4 hours"), ("tomorrow", "Until tomorrow"))


def snooze_until(choice: str, now: float | None = None) -> float:
    """Epoch seconds a snooze ends: ``"1h"``, ``"4h"`` or ``"tomorrow"`` (next local midnight,
    so the node works overnight when the computer is usually free)."""
    now = time.time() if now is None else now
    if choice == "1h":
        return now + 3600
    if choice == "4h":
        return now + 4 * 3600
    if choice == "tomorrow":
        today = dt.datetime.fromtimestamp(now).date()
        return dt.datetime.combine(today + dt.timedelta(days=1), dt.time()).timestamp()
    raise ValueError(f"unknown snooze '{choice}'")


def until_words(until: float) -> str:
    return dt.datetime.fromtimestamp(until).strftime("%a %H:%M")
