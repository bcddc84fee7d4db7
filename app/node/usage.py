"""The usage caps in force, and who must hear when they change.

The engine sets them (the idle set at start, then whatever ``SetUsageCaps`` sends as the
volunteer comes and goes); parts of the runtime that enforce a cap outside the engine's reach,
such as the P2P bandwidth limiter, subscribe here and apply each new set on the loop thread.
"""

from __future__ import annotations

from collections.abc import Callable

from app.node.config import UsageCaps

CapsListener = Callable[[UsageCaps], None]


class UsageCapsHub:
    def __init__(self, caps: UsageCaps | None = None) -> None:
        self._caps = caps or UsageCaps()
        self._listeners: list[CapsListener] = []

    @property
    def caps(self) -> UsageCaps:
        return self._caps

    def subscribe(self, listener: CapsListener) -> Callable[[], None]:
        """Call ``listener(caps)`` now and on every change; returns unsubscribe."""
        self._listeners.append(listener)
        listener(self._caps)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def set(self, caps: UsageCaps) -> None:
        """Validate (ConfigError names the bad field) and tell every listener."""
        caps.validate("usage caps")
        self._caps = caps
        for listener in list(self._listeners):
            listener(caps)
