"""Signed requests: canonical bytes, verification, recipient binding, replay protection.

A request that changes state or moves value carries an ``Auth`` (public key, recipient, timestamp,
nonce, signature). The signature covers::

    b"NSP2P2\\0" + method + b"\\0" + recipient (32 bytes) + timestamp_ms (8 bytes BE) + nonce
    + SHA-256(body)

where ``body`` is the request serialised deterministically with ``auth`` cleared. The method name
is inside, so a signed Store cannot be replayed as a Register; the recipient is the node id the
caller meant to reach, so a forward or commit signed for node A is refused by node B; the
timestamp bounds how long a captured request is worth anything and the nonce cache refuses it
inside that window, across restarts too (the cache is persisted in the node's data dir).

The caller's identity is the verified key, and only that: handlers are given ``Verified.node_id``
and never read a name the caller wrote into the request.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import grpc

from app.crypto.keys import PUBLIC_KEY_SIZE, PrivateKey, verify
from app.node.p2p.errors import RpcRefusal
from app.node.p2p.protocol import pb2

DOMAIN = b"NSP2P2\x00"
NONCE_SIZE = 16
NODE_ID_SIZE = 32

UNBOUND_METHODS = frozenset({"/neuroshard.v1.Tracker/Register", "/neuroshard.v1.Tracker/Heartbeat"})
"""A tracker is dialled by address before anyone knows an id for it, so these two may be signed
for "any recipient" (empty). Neither moves value: Register is bound to the signer's own record."""


def _body_digest(message: object) -> bytes:
    clone = type(message)()
    clone.CopyFrom(message)
    clone.ClearField("auth")
    return hashlib.sha256(clone.SerializeToString(deterministic=True)).digest()


def signing_bytes(method: str, recipient: bytes, timestamp_ms: int, nonce: bytes, body_digest: bytes) -> bytes:
    return (DOMAIN + method.encode() + b"\x00" + recipient.rjust(NODE_ID_SIZE, b"\x00")
            + timestamp_ms.to_bytes(8, "big") + nonce + body_digest)


def sign_message(key: PrivateKey, method: str, message: object, recipient: bytes,
                 timestamp: float | None = None) -> None:
    """Fill ``message.auth`` in place for the node ``recipient`` (its 32-byte id; empty only for
    UNBOUND_METHODS): the signature covers everything else in the message."""
    if len(recipient) not in (0, NODE_ID_SIZE):
        raise ValueError(f"recipient must be a {NODE_ID_SIZE}-byte node id")
    ts = int((time.time() if timestamp is None else timestamp) * 1000)
    nonce = secrets.token_bytes(NONCE_SIZE)
    sig = key.sign(signing_bytes(method, recipient, ts, nonce, _body_digest(message)))
    message.auth.CopyFrom(pb2.Auth(public_key=key.public_key.data, timestamp_ms=ts, nonce=nonce, signature=sig,
                                   recipient=recipient))


@dataclass(frozen=True)
class Verified:
    public_key: bytes
    node_id: bytes


_ENTRY = 8 + 16  # timestamp_ms (BE) + the first 16 bytes of SHA-256(public key + nonce)


class ReplayGuard:
    """Checks recipient and timestamp, and remembers nonces while their timestamp is inside the
    window (bounded: at most ``max_entries``).

    ``me`` is the id of the node this guard answers for (requests signed for another are refused).
    With ``path`` the nonces seen are appended to that file and read back at start, so a request
    captured before a restart is still refused after it; the file is rewritten with only the live
    entries whenever it grows past twice ``max_entries``, so it stays bounded too.
    """

    def __init__(self, window_s: float, me: bytes = b"", *, path: Path | None = None,
                 max_entries: int = 200_000) -> None:
        self.window_s = window_s
        self.me = me
        self._seen: OrderedDict[bytes, int] = OrderedDict()  # key -> request timestamp_ms
        self._max = max_entries
        self._path = path
        self._file: object | None = None
        self._written = 0
        if path is not None:
            self._load(path)

    def check(self, public_key: bytes, timestamp_ms: int, nonce: bytes, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if abs(timestamp_ms / 1000.0 - now) > self.window_s:
            raise RpcRefusal(grpc.StatusCode.PERMISSION_DENIED,
                             "request timestamp is outside the accepted window: check the system clock")
        self._expire(now)
        key = hashlib.sha256(public_key + nonce).digest()[:16]
        if key in self._seen:
            raise RpcRefusal(grpc.StatusCode.PERMISSION_DENIED, "replayed request (nonce already seen)")
        self._seen[key] = timestamp_ms
        self._persist(key, timestamp_ms)

    def check_recipient(self, method: str, recipient: bytes) -> None:
        if recipient == self.me or (not recipient and method in UNBOUND_METHODS):
            return
        if not recipient:
            raise RpcRefusal(grpc.StatusCode.PERMISSION_DENIED,
                             f"{method} must name its recipient (this node, {self.me.hex()[:16]})")
        raise RpcRefusal(grpc.StatusCode.PERMISSION_DENIED,
                         f"request was signed for node {recipient.hex()[:16]}, this is {self.me.hex()[:16]}")

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()  # type: ignore[attr-defined]
            self._file = None

    # ------------------------------------------------------------------ bounds and persistence
    def _expire(self, now: float) -> None:
        horizon = int((now - self.window_s) * 1000)
        while self._seen and (next(iter(self._seen.values())) < horizon or len(self._seen) > self._max):
            self._seen.popitem(last=False)

    def _load(self, path: Path) -> None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raw = b""
        except OSError:
            raw = b""  # unreadable: start empty; the timestamp window still bounds replays
        for i in range(0, len(raw) - len(raw) % _ENTRY, _ENTRY):  # in the order they were seen
            self._seen[raw[i + 8:i + _ENTRY]] = int.from_bytes(raw[i:i + 8], "big")
        self._expire(time.time())
        self._rewrite()

    def _rewrite(self) -> None:
        """Replace the file with the live entries only (atomically: temp file, then rename)."""
        assert self._path is not None
        self.close()
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(b"".join(ts.to_bytes(8, "big") + key for key, ts in self._seen.items()))
            os.replace(tmp, self._path)
            self._file = open(self._path, "ab", buffering=0)  # noqa: SIM115 - held open for appends
        except OSError:
            self._file = None  # a read-only data dir: replays stay refused until the next restart
        self._written = len(self._seen)

    def _persist(self, key: bytes, timestamp_ms: int) -> None:
        if self._path is None:
            return
        if self._written >= 2 * self._max:
            self._rewrite()
            return
        if self._file is not None:
            try:
                self._file.write(timestamp_ms.to_bytes(8, "big") + key)  # type: ignore[attr-defined]
            except OSError:
                self.close()
            self._written += 1


def verify_message(method: str, message: object, guard: ReplayGuard) -> Verified:
    """Verify ``message.auth`` for the node ``guard`` answers for; raises
    RpcRefusal(UNAUTHENTICATED / PERMISSION_DENIED) otherwise."""
    if not message.HasField("auth"):
        raise RpcRefusal(grpc.StatusCode.UNAUTHENTICATED, f"{method} must be signed")
    auth = message.auth
    if len(auth.public_key) != PUBLIC_KEY_SIZE or len(auth.nonce) != NONCE_SIZE \
            or len(auth.recipient) not in (0, NODE_ID_SIZE):
        raise RpcRefusal(grpc.StatusCode.UNAUTHENTICATED, "malformed signature envelope")
    payload = signing_bytes(method, auth.recipient, auth.timestamp_ms, auth.nonce, _body_digest(message))
    if not verify(auth.public_key, payload, auth.signature):
        raise RpcRefusal(grpc.StatusCode.UNAUTHENTICATED, "bad signature")
    guard.check_recipient(method, auth.recipient)
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
