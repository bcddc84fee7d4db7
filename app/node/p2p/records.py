"""Signed records exchanged between nodes: peer records, layer announcements and DHT values.

Envelope (version 1), the same for every kind::

    b"NS" | kind (1 byte) | version (1 byte) | public key (33) | payload length (4, BE) | payload | sig (64)

The signature (keys.py: ECDSA secp256k1, low-S) covers every byte before it, so a record is
forwarded as received and never re-encoded. The signer is the node the record describes: node
id = SHA-256(public key), so nobody can publish a record, announcement or value in another
node's name. ``parse_*`` functions check every field's type and range and raise
:class:`InvalidRecord` with the reason; they never trust a field they have not checked.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

from app.crypto.errors import InvalidRecord
from app.crypto.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, PrivateKey
from app.node.p2p.auth import verify_cached

VERSION = 1
KIND_PEER, KIND_LAYER, KIND_VALUE = 1, 2, 3
MAX_PAYLOAD = 64 * 1024
"""A DHT value or record larger than this is refused: the DHT holds small pointers, not data."""
MAX_ADDRESS = 255
MAX_MEMORY = 2**50
"""A peer claiming more memory than this (1 PiB) is lying; the record is refused."""
_HEAD = 2 + 1 + 1 + PUBLIC_KEY_SIZE + 4


def _seal(key: PrivateKey, kind: int, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"record payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = b"NS" + bytes((kind, VERSION)) + key.public_key.data + len(payload).to_bytes(4, "big") + payload
    return body + key.sign(body)


def _open(raw: bytes, kind: int) -> tuple[bytes, bytes]:
    """(public key, payload) of a verified envelope of ``kind``."""
    if not isinstance(raw, bytes | bytearray) or len(raw) < _HEAD + SIGNATURE_SIZE:
        raise InvalidRecord("record too short")
    raw = bytes(raw)
    if raw[:2] != b"NS" or raw[2] != kind:
        raise InvalidRecord(f"not a record of kind {kind}")
    if raw[3] != VERSION:
        raise InvalidRecord(f"record version {raw[3]} is not supported (this node reads {VERSION})")
    pub = raw[4:4 + PUBLIC_KEY_SIZE]
    length = int.from_bytes(raw[_HEAD - 4:_HEAD], "big")
    if length > MAX_PAYLOAD or len(raw) != _HEAD + length + SIGNATURE_SIZE:
        raise InvalidRecord("record length field does not match its size")
    body, sig = raw[:-SIGNATURE_SIZE], raw[-SIGNATURE_SIZE:]
    if not verify_cached(pub, body, sig):
        raise InvalidRecord("record signature does not match its public key")
    return pub, raw[_HEAD:_HEAD + length]


def _json(payload: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidRecord("record payload is not JSON") from None
    if not isinstance(obj, dict):
        raise InvalidRecord("record payload must be an object")
    return obj


def _get(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidRecord(f"field {name!r} is missing or has the wrong type")
    return value


def _address(obj: dict[str, Any], name: str) -> str:
    value = _get(obj, name, str)
    if len(value) > MAX_ADDRESS or (value and (":" not in value or any(c.isspace() for c in value))):
        raise InvalidRecord(f"field {name!r} is not a host:port address")
    return value


def _number(obj: dict[str, Any], name: str, low: float, high: float) -> float:
    value = float(_get(obj, name, (int, float)))
    if not low <= value <= high:
        raise InvalidRecord(f"field {name!r} out of range")
    return value


@dataclass(frozen=True)
class PeerRecord:
    """A node as others see it: identity, how to reach it, what it offers.

    ``address`` is empty for a node behind NAT, which is reached through ``relay``. ``tls`` is
    the SHA-256 of the public key of the certificate the node serves with (tls.py): being in the
    signed record, it is the node key's signature binding that certificate to the node; empty for
    a node that serves no port. The layer range comes from its layer announcement (0, 0 for a
    plain contact); ``latency_ms`` is a local measurement, not part of the signed record.
    """

    public_key: bytes
    address: str
    relay: str = ""
    tier: str = ""
    capacity: float = 0.0
    load: float = 0.0
    timestamp: float = 0.0
    layer_start: int = 0
    layer_end: int = 0
    latency_ms: float | None = None
    tls: bytes = b""
    memory: int = 0
    """Bytes of memory the node gives the model (its budget); the layer pool sums them to size
    the architecture. 0 when the node does not say (an older node)."""
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def node_id(self) -> bytes:
        return hashlib.sha256(self.public_key).digest()

    @property
    def dial(self) -> str:
        """Where to send requests: the address, or the relay for a hidden node."""
        return self.address or self.relay

    def with_latency(self, latency_ms: float | None) -> PeerRecord:
        return replace(self, latency_ms=latency_ms)


def sign_peer_record(key: PrivateKey, address: str, relay: str = "", tier: str = "",
                     capacity: float = 0.0, load: float = 0.0, tls: bytes = b"", memory: int = 0) -> PeerRecord:
    ts = int(time.time() * 1000)
    fields: dict[str, Any] = {"addr": address, "relay": relay, "tier": tier, "cap": capacity, "load": load,
                              "ts": ts}
    if tls:
        fields["tls"] = tls.hex()
    if memory:
        fields["mem"] = int(memory)
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return parse_peer_record(_seal(key, KIND_PEER, payload))


_PARSED: OrderedDict[bytes, PeerRecord] = OrderedDict()
_PARSED_MAX = 16_384


def parse_peer_record(raw: bytes) -> PeerRecord:
    """Parse and verify; memoised by the exact bytes, since every DHT answer repeats records
    already seen (parsing is a pure function of the bytes, so the memo is exact)."""
    raw = bytes(raw)
    hit = _PARSED.get(raw)
    if hit is not None:
        _PARSED.move_to_end(raw)
        return hit
    record = _parse_peer_record(raw)
    _PARSED[raw] = record
    if len(_PARSED) > _PARSED_MAX:
        _PARSED.popitem(last=False)
    return record


def _parse_peer_record(raw: bytes) -> PeerRecord:
    pub, payload = _open(raw, KIND_PEER)
    obj = _json(payload)
    address, relay = _address(obj, "addr"), _address(obj, "relay")
    if not address and not relay:
        raise InvalidRecord("a peer record needs an address or a relay")
    tier = _get(obj, "tier", str)
    if len(tier) > 8:
        raise InvalidRecord("tier too long")
    return PeerRecord(public_key=pub, address=address, relay=relay, tier=tier,
                      capacity=_number(obj, "cap", 0, 1e12), load=_number(obj, "load", 0, 1e6),
                      timestamp=_number(obj, "ts", 0, 1e15) / 1000.0, tls=_fingerprint(obj),
                      memory=int(_number(obj, "mem", 0, MAX_MEMORY)) if "mem" in obj else 0, raw=bytes(raw))


def _fingerprint(obj: dict[str, Any]) -> bytes:
    """The optional ``tls`` field: 64 hex digits (SHA-256), absent for a node serving no port."""
    if "tls" not in obj:
        return b""
    text = _get(obj, "tls", str)
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise InvalidRecord("field 'tls' is not hex") from None
    if len(value) != 32:
        raise InvalidRecord("field 'tls' must be a 32-byte SHA-256")
    return value


@dataclass(frozen=True)
class LayerAnnouncement:
    """"I hold layers [layer_start, layer_end)": published in the DHT under every layer's key.

    Build one with the layer range and offer, then :meth:`signed` fills identity and time; only
    a signed one is stored or accepted.
    """

    layer_start: int
    layer_end: int
    tier: str = ""
    capacity: float = 0.0
    load: float = 0.0
    ttl: float = 120.0
    public_key: bytes = b""
    address: str = ""
    relay: str = ""
    timestamp: float = 0.0
    raw: bytes = field(default=b"", repr=False, compare=False)

    def signed(self, key: PrivateKey, address: str, relay: str = "") -> LayerAnnouncement:
        payload = json.dumps({
            "start": self.layer_start, "end": self.layer_end, "tier": self.tier, "cap": self.capacity,
            "load": self.load, "ttl": self.ttl, "addr": address, "relay": relay,
            "ts": int(time.time() * 1000),
        }, sort_keys=True, separators=(",", ":")).encode()
        return parse_layer_announcement(_seal(key, KIND_LAYER, payload))

    @property
    def node_id(self) -> bytes:
        return hashlib.sha256(self.public_key).digest()

    def is_live(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.timestamp + self.ttl

    def to_peer_record(self) -> PeerRecord:
        return PeerRecord(public_key=self.public_key, address=self.address, relay=self.relay,
                          tier=self.tier, capacity=self.capacity, load=self.load,
                          timestamp=self.timestamp, layer_start=self.layer_start,
                          layer_end=self.layer_end)


def parse_layer_announcement(raw: bytes) -> LayerAnnouncement:
    pub, payload = _open(raw, KIND_LAYER)
    obj = _json(payload)
    start, end = _get(obj, "start", int), _get(obj, "end", int)
    if not 0 <= start < end <= 100_000:
        raise InvalidRecord("layer range must satisfy 0 <= start < end")
    tier = _get(obj, "tier", str)
    if len(tier) > 8:
        raise InvalidRecord("tier too long")
    address, relay = _address(obj, "addr"), _address(obj, "relay")
    if not address and not relay:
        raise InvalidRecord("an announcement needs an address or a relay")
    return LayerAnnouncement(
        layer_start=start, layer_end=end, tier=tier, capacity=_number(obj, "cap", 0, 1e12),
        load=_number(obj, "load", 0, 1e6), ttl=_number(obj, "ttl", 0, 86400 * 7),
        public_key=pub, address=address, relay=relay,
        timestamp=_number(obj, "ts", 0, 1e15) / 1000.0, raw=bytes(raw))


@dataclass(frozen=True)
class SignedValue:
    """A DHT value: ``key`` -> ``value``, published by ``public_key`` until ``expires``.

    Nodes keep one value per (key, publisher), the newest by ``timestamp``.
    """

    public_key: bytes
    key: bytes
    value: bytes
    timestamp: float
    expires: float
    raw: bytes = field(repr=False, compare=False)

    @property
    def publisher(self) -> bytes:
        return hashlib.sha256(self.public_key).digest()


def sign_value(priv: PrivateKey, key: bytes, value: bytes, ttl: float) -> SignedValue:
    now = time.time()
    payload = (key + int(now * 1000).to_bytes(8, "big") + int((now + ttl) * 1000).to_bytes(8, "big")
               + value)
    return parse_value(_seal(priv, KIND_VALUE, payload))


def parse_value(raw: bytes) -> SignedValue:
    pub, payload = _open(raw, KIND_VALUE)
    if len(payload) < 48:
        raise InvalidRecord("DHT value payload too short")
    if len(payload[:32]) != 32:
        raise InvalidRecord("DHT key must be 32 bytes")
    ts = int.from_bytes(payload[32:40], "big") / 1000.0
    expires = int.from_bytes(payload[40:48], "big") / 1000.0
    if expires < ts:
        raise InvalidRecord("DHT value expires before it was published")
    return SignedValue(pub, payload[:32], payload[48:], ts, expires, bytes(raw))
