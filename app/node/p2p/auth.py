"""Signed requests: canonical bytes, verification, replay protection.

A request that changes state or moves value carries an ``Auth`` (public key, timestamp, nonce,
signature). The signature covers::

    b"NSP2P1\\0" + method + b"\\0" + timestamp_ms (8 bytes BE) + nonce + SHA-256(body)

where ``body`` is the request serialised deterministically with ``auth`` cleared. The method
name is inside, so a signed Store cannot be replayed as a Register; the timestamp bounds how long
a captured request is worth anything and the nonce cache refuses it inside that window.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import grpc

from app.crypto.keys import PUBLIC_KEY_SIZE, PrivateKey, verify
from app.node.p2p.errors import RpcRefusal
from app.node.p2p.protocol import pb2

DOMAIN = b"NSP2P1\x00"
NONCE_SIZE = 16


def _body_digest(message: object) -> bytes:
    clone = type(message)()
    clone.CopyFrom(message)
    clone.ClearField("auth")
    return hashlib.sha256(clone.SerializeToString(deterministic=True)).digest()


def signing_bytes(method: str, timestamp_ms: int, nonce: bytes, body_digest: bytes) -> bytes:
    return DOMAIN + method.encode() + b"\x00" + timestamp_ms.to_bytes(8, "big") + nonce + body_digest


def sign_message(key: PrivateKey, method: str, message: object, timestamp: float | None = None) -> None:
    """Fill ``message.auth`` in place: the signature covers everything else in the message."""
    ts = int((time.time() if timestamp is None else timestamp) * 1000)
    nonce = secrets.token_bytes(NONCE_SIZE)
    sig = key.sign(signing_bytes(method, ts, nonce, _body_digest(message)))
    message.auth.CopyFrom(pb2.Auth(public_key=key.public_key.data, timestamp_ms=ts, nonce=nonce, signature=sig))


@dataclass(frozen=True)
class Verified:
    public_key: bytes
    node_id: bytes


class ReplayGuard:
    """Checks timestamps and remembers nonces for ``2 * window`` seconds (bounded memory)."""

    def __init__(self, window_s: float, max_entries: int = 200_000) -> None:
        self.window_s = window_s
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._max = max_entries

    def check(self, public_key: bytes, timestamp_ms: int, nonce: bytes, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if abs(timestamp_ms / 1000.0 - now) > self.window_s:
            raise RpcRefusal(grpc.StatusCode.PERMISSION_DENIED,
                             "request timestamp is outside the accepted window: check the system clock")
        self._expire(now)
        key = public_key + nonce
        if key in self._seen:
            raise RpcRefusal(grpc.StatusCode.PERMISSION_DENIED, "replayed request (nonce already seen)")
        self._seen[key] = now

    def _expire(self, now: float) -> None:
        horizon = now - 2 * self.window_s
        while self._seen and (next(iter(self._seen.values())) < horizon or len(self._seen) > self._max):
            self._seen.popitem(last=False)


def verify_message(method: str, message: object, guard: ReplayGuard) -> Verified:
    """Verify ``message.auth``; raises RpcRefusal(UNAUTHENTICATED/PERMISSION_DENIED) otherwise."""
    if not message.HasField("auth"):
        raise RpcRefusal(grpc.StatusCode.UNAUTHENTICATED, f"{method} must be signed")
    auth = message.auth
    if len(auth.public_key) != PUBLIC_KEY_SIZE or len(auth.nonce) != NONCE_SIZE:
        raise RpcRefusal(grpc.StatusCode.UNAUTHENTICATED, "malformed signature envelope")
    payload = signing_bytes(method, auth.timestamp_ms, auth.nonce, _body_digest(message))
    if not verify(auth.public_key, payload, auth.signature):
        raise RpcRefusal(grpc.StatusCode.UNAUTHENTICATED, "bad signature")
    guard.check(auth.public_key, auth.timestamp_ms, auth.nonce)
    return Verified(auth.public_key, hashlib.sha256(auth.public_key).digest())


_VERIFIED: OrderedDict[bytes, bool] = OrderedDict()
_VERIFIED_MAX = 65_536


def verify_cached(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """``keys.verify`` with a bounded memo: the same signed record is seen again and again in the
    DHT (every lookup returns contacts), and a pure-Python verify costs ~1 ms (PLATFORM.md).
    Verification is a pure function, so caching the answer is exact."""
    key = hashlib.sha256(public_key + signature + message).digest()
    hit = _VERIFIED.get(key)
    if hit is not None:
        _VERIFIED.move_to_end(key)
        return hit
    ok = verify(public_key, message, signature)
    _VERIFIED[key] = ok
    if len(_VERIFIED) > _VERIFIED_MAX:
        _VERIFIED.popitem(last=False)
    return ok
