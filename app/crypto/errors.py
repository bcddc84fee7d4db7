"""The one error of untrusted signed bytes: every record parser of the node raises it."""

from __future__ import annotations


class InvalidRecord(ValueError):
    """Bytes from a peer or a file that are not a valid record (peer records, DHT values, ledger
    records); ``reason`` says which rule failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid record: {reason}")
        self.reason = reason
