"""Keep Python's full garbage collections off the 50 ms budget of the GUI thread.

Measured here (tests/ui/test_responsiveness.py): once torch and a model are loaded, one full
(generation 2) collection scans every live object and took 844 ms, on whichever thread happened
to allocate - often the GUI thread. Objects that live as long as the process (torch's modules,
Qt wrappers, the model) never become garbage, so after start-up they are moved to the permanent
generation with ``gc.freeze()``: later full collections scan only what was created since. This
is the technique CPython documents for long-running processes (and Instagram's write-up on it).
Freezing is O(1); it is repeated after the node settles, for objects created while it started.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QTimer

from app.ui.bridge import EngineBridge

SETTLE_MS = (2_000, 15_000)  # the runtime builds its model and ledger state in the first seconds


def freeze_long_lived() -> int:
    """Move every object alive now to the permanent generation; returns how many are frozen."""
    gc.freeze()
    return gc.get_freeze_count()


def freeze_when_ready(bridge: EngineBridge) -> None:
    """Freeze once the node runs (torch and the model are loaded), and again once it settled."""

    def on_ready() -> None:
        freeze_long_lived()
        for delay in SETTLE_MS:
            QTimer.singleShot(delay, freeze_long_lived)

    bridge.ready.connect(on_ready)
