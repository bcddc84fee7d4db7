"""secp256k1 keys: signing, verification, node ids and addresses.

Signatures are ECDSA over SHA-256 with RFC 6979 deterministic nonces, encoded as 64 bytes r||s
and always low-S (``sigencode_string_canonize``): ecdsa accepts high-S signatures and coincurve
does not, so we sign canonically and refuse high-S on receipt (PLATFORM.md). Verification uses
coincurve when it is installed (about 40x faster) and the pure-Python ``ecdsa`` otherwise; both
accept exactly the same signatures.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import ecdsa
from ecdsa.ellipticcurve import PointJacobi
from ecdsa.util import sigdecode_string, sigencode_string_canonize

_CURVE = ecdsa.SECP256k1
_ORDER = _CURVE.order
SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 33  # compressed SEC1
ADDRESS_PREFIX = "ns1"

try:  # optional accelerated backend
    import coincurve as _coincurve
except ImportError:  # pragma: no cover - depends on the environment
    _coincurve = None


class KeyError_(ValueError):
    """Raised for malformed key material (named to avoid shadowing the builtin KeyError)."""


@functools.lru_cache(maxsize=4096)
def _on_curve(public_key: bytes) -> bool:
    """Point decompression costs a modular square root (~3 ms in pure Python); a ledger parses many
    records by few authors, so the answer is cached per key."""
    try:
        ecdsa.VerifyingKey.from_string(public_key, curve=_CURVE)
    except (ecdsa.MalformedPointError, ValueError):
        return False
    return True


def _node_id(public_key: bytes) -> bytes:
    return hashlib.sha256(public_key).digest()


@dataclass(frozen=True)
class PublicKey:
    """A compressed secp256k1 public key."""

    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) != PUBLIC_KEY_SIZE or self.data[0] not in (2, 3):
            raise KeyError_("public key must be 33 bytes, compressed SEC1")
        if not _on_curve(bytes(self.data)):
            raise KeyError_("public key is not a point on secp256k1")

    @property
    def node_id(self) -> bytes:
        """32-byte node id: SHA-256 of the compressed public key."""
        return _node_id(self.data)

    @property
    def address(self) -> str:
        return address_from_public_key(self.data)

    def verify(self, message: bytes, signature: bytes) -> bool:
        return verify(self.data, message, signature)


class PrivateKey:
    """A secp256k1 private key. Its repr never shows the secret."""

    __slots__ = ("_sk", "_public")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise KeyError_("private key must be 32 bytes")
        value = int.from_bytes(secret, "big")
        if not 0 < value < _ORDER:
            raise KeyError_("private key out of range for secp256k1")
        self._sk = ecdsa.SigningKey.from_string(secret, curve=_CURVE, hashfunc=hashlib.sha256)
        self._public = PublicKey(self._sk.get_verifying_key().to_string("compressed"))

    @classmethod
    def generate(cls) -> PrivateKey:
        while True:
            secret = secrets.token_bytes(32)
            if 0 < int.from_bytes(secret, "big") < _ORDER:
                return cls(secret)

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def node_id(self) -> bytes:
        return self._public.node_id

    @property
    def address(self) -> str:
        return self._public.address

    def to_bytes(self) -> bytes:
        """The raw 32-byte secret: only for the keystore, never for logs or events."""
        return self._sk.to_string()

    def sign(self, message: bytes) -> bytes:
        """Deterministic (RFC 6979), low-S, 64-byte r||s signature of SHA-256(message)."""
        return self._sk.sign_deterministic(
            message, hashfunc=hashlib.sha256, sigencode=sigencode_string_canonize
        )

    def __repr__(self) -> str:
        return f"PrivateKey(address={self.address})"


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True only for a valid, canonical (low-S) signature by ``public_key`` over ``message``."""
    if len(signature) != SIGNATURE_SIZE or len(public_key) != PUBLIC_KEY_SIZE:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < _ORDER and 0 < s <= _ORDER // 2):
        return False  # high-S or out of range: refused so signatures stay unmalleable
    if _coincurve is not None:
        try:
            der = _coincurve.ecdsa.cdata_to_der(_coincurve.ecdsa.deserialize_compact(signature))
            return _coincurve.PublicKey(public_key).verify(der, message)
        except Exception:  # malformed key or signature: treated as invalid
            return False
    try:
        vk = _verifying_key(public_key)
        return vk.verify(signature, message, hashfunc=hashlib.sha256, sigdecode=sigdecode_string)
    except (ecdsa.BadSignatureError, ecdsa.MalformedPointError, ValueError):
        return False


@functools.lru_cache(maxsize=4096)
def _verifying_key(public_key: bytes) -> ecdsa.VerifyingKey:
    """A verifying key with a precomputed multiplication table, cached per public key.

    A ledger sees many records from few authors; ecdsa's precomputation (used for generator-like
    points) roughly doubles pure-Python verification speed for a key seen again (measured 410 ->
    880 verifications/s here). Raises ValueError/MalformedPointError for bad keys, never caches them.
    """
    point = ecdsa.VerifyingKey.from_string(public_key, curve=_CURVE).pubkey.point
    table = PointJacobi(_CURVE.curve, point.x(), point.y(), 1, _ORDER, generator=True)
    return ecdsa.VerifyingKey.from_public_point(table, curve=_CURVE, hashfunc=hashlib.sha256)


# --- addresses ------------------------------------------------------------------------------

def address_from_public_key(public_key: bytes) -> str:
    """``ns1`` + hex of the first 20 bytes of the node id + a 4-byte checksum (hex, 48 chars)."""
    body = _node_id(public_key)[:20]
    checksum = hashlib.sha256(b"neuroshard-address" + body).digest()[:4]
    return ADDRESS_PREFIX + (body + checksum).hex()


def is_valid_address(address: str) -> bool:
    """Checks the prefix, length and checksum; catches typos before value moves."""
    if not isinstance(address, str) or not address.startswith(ADDRESS_PREFIX):
        return False
    raw_hex = address[len(ADDRESS_PREFIX):]
    if len(raw_hex) != 48:
        return False
    try:
        raw = bytes.fromhex(raw_hex)
    except ValueError:
        return False
    expected = hashlib.sha256(b"neuroshard-address" + raw[:20]).digest()[:4]
    return hmac.compare_digest(raw[20:], expected)
