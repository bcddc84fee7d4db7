"""Per-peer request budgets and scores.

Each peer (its node id when the request is signed or carries a record, else its transport
address) has a token bucket: a burst of ``rate_burst`` requests, refilled at ``rate_per_s``. Its
score starts at 0, drops on bad signatures and garbage, and climbs back slowly on good requests;
below ``score_drop_threshold`` the peer is dropped (refused outright) for ``drop_duration_s``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import grpc

from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import RpcRefusal

_MAX_PEERS = 50_000
_GOOD_STEP = 0.1
_MAX_SCORE = 10.0


@dataclass
class _Peer:
    tokens: float
    stamp: float
    score: float = 0.0
    dropped_until: float = 0.0


class PeerGuard:
    def __init__(self, config: P2PConfig) -> None:
        self.config = config
        self._peers: OrderedDict[str, _Peer] = OrderedDict()

    def _peer(self, key: str, now: float) -> _Peer:
        peer = self._peers.get(key)
        if peer is None:
            peer = self._peers[key] = _Peer(tokens=self.config.rate_burst, stamp=now)
            if len(self._peers) > _MAX_PEERS:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(key)
        return peer

    def admit(self, key: str, now: float | None = None) -> None:
        """Spend one token or refuse with RESOURCE_EXHAUSTED; refuse dropped peers outright."""
        now = time.monotonic() if now is None else now
        peer = self._peer(key, now)
        if peer.dropped_until > now:
            raise RpcRefusal(grpc.StatusCode.PERMISSION_DENIED,
                             "this peer was dropped for sending invalid requests; retry later")
        peer.tokens = min(self.config.rate_burst, peer.tokens + (now - peer.stamp) * self.config.rate_per_s)
        peer.stamp = now
        if peer.tokens < 1.0:
            raise RpcRefusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "request rate limit exceeded; slow down")
        peer.tokens -= 1.0

    def penalise(self, key: str, amount: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        peer = self._peer(key, now)
        peer.score += amount
        if peer.score <= self.config.score_drop_threshold:
            peer.dropped_until = now + self.config.drop_duration_s
            peer.score = 0.0

    def reward(self, key: str) -> None:
        peer = self._peers.get(key)
        if peer is not None:
            peer.score = min(_MAX_SCORE, peer.score + _GOOD_STEP)

    def score(self, key: str) -> float:
        peer = self._peers.get(key)
        return peer.score if peer else 0.0

    def is_dropped(self, key: str, now: float | None = None) -> bool:
        peer = self._peers.get(key)
        return bool(peer and peer.dropped_until > (time.monotonic() if now is None else now))
