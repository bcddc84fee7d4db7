"""What this computer did, kept in the data dir so charts and counters continue after a restart.

``ui-history.json`` holds the charts' last points (step, loss, tokens per second) and the totals
the window counted: training steps, tokens and accepted proofs, since the date it started
counting. The node's step numbers continue across restarts (a checkpoint restores them), so
loaded points and new ones form one curve. Written atomically every ``FLUSH_S`` and when the
window closes (the periodic writes on a worker thread when one is given: an fsync must not stall
the GUI thread); a damaged file is set aside and counting starts again (the ledger stays the
record of what was earned).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.node.config import atomic_write_bytes
from app.node.events import ProofAccepted, StepDone

HISTORY_FILE = "ui-history.json"
MAX_POINTS = 600  # as many as a chart shows (widgets/live_chart.py)
FLUSH_S = 30.0


@dataclass(frozen=True)
class Totals:
    since: float  # epoch seconds the counting began
    steps: int
    tokens: int
    proofs: int  # ProofAccepted events seen: proofs the node made and its ledger took in


class WorkHistory:
    def __init__(self, data_dir: Path, background: Callable[[Callable[[], None]], object] | None = None) -> None:
        self.path = Path(data_dir) / HISTORY_FILE
        self._background = background
        self.points: deque[tuple[int, float, float]] = deque(maxlen=MAX_POINTS)
        self._since = time.time()
        self._steps = self._tokens = self._proofs = 0
        self._session_tokens = 0  # the node's running total this session (StepDone.tokens_total)
        self._dirty = False
        self._flushed_at = time.monotonic()
        self._load()

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            self._since = float(doc["since"])
            self._steps, self._tokens, self._proofs = (int(doc[k]) for k in ("steps", "tokens", "proofs"))
            for step, loss, speed in doc["points"][-MAX_POINTS:]:
                self.points.append((int(step), float(loss), float(speed)))
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                self.path.replace(self.path.with_name(HISTORY_FILE + ".damaged"))
            self.points.clear()
            self._since, self._steps, self._tokens, self._proofs = time.time(), 0, 0, 0

    def relocate(self, data_dir: Path) -> None:
        """The data dir moved (its copy carries this file): write there from now on."""
        self.path = Path(data_dir) / HISTORY_FILE

    def totals(self) -> Totals:
        return Totals(self._since, self._steps, self._tokens, self._proofs)

    def on_step(self, event: StepDone) -> None:
        self._steps += 1
        # tokens_total counts from 0 each session: add what it grew by; smaller means a new session
        restarted = event.tokens_total < self._session_tokens
        self._tokens += event.tokens_total if restarted else event.tokens_total - self._session_tokens
        self._session_tokens = event.tokens_total
        if math.isfinite(event.loss):
            self.points.append((event.step, float(event.loss), float(event.tokens_per_s)))
        self._changed()

    def on_proof(self, _event: ProofAccepted) -> None:
        self._proofs += 1
        self._changed()

    def _changed(self) -> None:
        self._dirty = True
        if time.monotonic() - self._flushed_at >= FLUSH_S:
            self.flush(in_background=self._background is not None)

    def flush(self, in_background: bool = False) -> None:
        """Write the file if anything changed, now or (``in_background``) on the worker; a full
        disk loses only what it could not write."""
        if not self._dirty:
            return
        doc: dict[str, Any] = {"since": self._since, "steps": self._steps, "tokens": self._tokens,
                               "proofs": self._proofs, "points": [list(p) for p in self.points]}
        data, path = json.dumps(doc).encode(), self.path
        self._dirty = False
        self._flushed_at = time.monotonic()

        def write() -> None:
            with contextlib.suppress(OSError):
                atomic_write_bytes(path, data)

        if in_background and self._background is not None:
            self._background(write)
        else:
            write()
