"""Bounded resources per peer for tensor streams: how many at once, how many bytes in flight.

A stream's declared size (its header's ``total_bytes``, already checked against the hard cap
``max_stream_bytes``) is reserved before a single payload byte is buffered, against three caps:
``max_streams_per_peer`` (32) concurrent streams and ``max_inflight_bytes_per_peer`` bytes for one
peer, and ``max_inflight_bytes`` for the whole node (fresh keys and addresses are cheap, so the
per-peer caps alone would not bound memory). The reservation is held until the stream's handler
has finished (its tensors are views of the receive buffer) and released however it ends. A
stream over any cap is refused with RESOURCE_EXHAUSTED and the cap it hit.

So the receive buffers of one node never exceed ``max_inflight_bytes``: with the defaults, a
peer's stalled or oversized streams cost it at most 1 GiB of our memory and all peers together
at most 2 GiB, and a stall ends after ``stream_stall_timeout_s`` (tensor_rpc.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import RpcRefusal


@dataclass
class _Held:
    streams: int = 0
    bytes: int = 0


class StreamBudget:
    def __init__(self, config: P2PConfig) -> None:
        self.config = config
        self._peers: dict[str, _Held] = {}
        self.total_bytes = 0

    def in_flight(self, peer: str) -> tuple[int, int]:
        """(streams, bytes) currently held by ``peer``."""
        held = self._peers.get(peer)
        return (held.streams, held.bytes) if held else (0, 0)

    @contextlib.contextmanager
    def hold(self, peer: str, declared: int) -> Iterator[None]:
        """Reserve one stream of ``declared`` bytes for ``peer`` for the duration of the block."""
        cfg = self.config
        held = self._peers.get(peer) or _Held()
        if held.streams >= cfg.max_streams_per_peer:
            raise RpcRefusal(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"too many tensor streams at once from this peer (limit {cfg.max_streams_per_peer})")
        if held.bytes + declared > cfg.max_inflight_bytes_per_peer:
            raise RpcRefusal(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"this peer already has {held.bytes} bytes in flight; {declared} more would exceed "
                             f"{cfg.max_inflight_bytes_per_peer}")
        if self.total_bytes + declared > cfg.max_inflight_bytes:
            raise RpcRefusal(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"this node has {self.total_bytes} bytes in flight; {declared} more would exceed "
                             f"{cfg.max_inflight_bytes}")
        self._peers[peer] = held
        held.streams += 1
        held.bytes += declared
        self.total_bytes += declared
        try:
            yield
        finally:
            held.streams -= 1
            held.bytes -= declared
            self.total_bytes -= declared
            if held.streams == 0:
                self._peers.pop(peer, None)
