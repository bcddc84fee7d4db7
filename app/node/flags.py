"""argparse types for the numbers sub-commands take, so a bad one ends as every bad flag does:
one line naming the flag and what it expects, exit code 2 (app/cli.py's parser). Imports nothing
of the project, so any sub-command may use it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def port_argument(text: str) -> int:
    """argparse ``type`` for a TCP port flag: 0-65535 (0: a free one), else one line and exit 2."""
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: expected 0-65535 (0 picks a free one)")
    return int(text)


def count_argument(minimum: int) -> Callable[[str], int]:
    """argparse ``type`` for a whole number of at least ``minimum`` (steps, nodes, a limit)."""

    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small: expected at least {minimum}")
        return value

    return count


def seconds_argument(text: str) -> float:
    """argparse ``type`` for a duration flag: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value
