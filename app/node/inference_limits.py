"""What one node gives to inference sessions, and its optional local completions endpoint: the
``[inference]`` section of config.toml.

Read through the one config schema (app/node/schema.py) like every section: each field's type and
range is declared here once, and a bad value is a one-line error naming it. The serving side
(runtime/inference_service.py) enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge, Gt, Interval, Le

from app.node.schema import STRICT, check


@dataclass(frozen=True, kw_only=True)
class InferenceLimits:
    """Defaults for a volunteer's machine: 16 sessions in 256 MiB of cache (a tiny or genesis
    model's stage holds a full-length session in a few MiB), forgotten after 2 idle minutes, and
    never more than half of the node's compute away from training."""

    __pydantic_config__ = STRICT
    max_sessions: Annotated[int, Interval(ge=1, le=4096)] = 16
    cache_bytes: Annotated[int, Ge(1 << 20)] = 256 * 1024 * 1024
    """Key/value cache all sessions together may reserve (reserved at open for the whole length)."""
    idle_timeout_s: Annotated[float, Interval(ge=1.0, le=86_400.0)] = 120.0
    """A session idle this long is forgotten (the client rebuilds it from its history)."""
    compute_share: Annotated[float, Gt(0.0), Le(1.0)] = 0.5
    """Most of this node's compute time inference may take: the rest stays with training."""
    share_window_s: Annotated[float, Gt(0.0)] = 10.0
    """The share is kept over any window this long (a burst may use one window's budget)."""
    max_wait_s: Annotated[float, Ge(0.0)] = 5.0
    """A step waits at most this long for budget, then is refused as busy (the client fails over)."""
    openai_endpoint: bool = False
    """Serve the OpenAI completions API on 127.0.0.1 (runtime/openai_endpoint.py), so existing
    clients can use the model; off unless the volunteer turns it on."""
    openai_port: Annotated[int, Interval(ge=1, le=65535)] = 8760

    def validate(self) -> None:
        check(self, prefix="inference")
