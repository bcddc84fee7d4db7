"""Signed ledger records: one canonical byte encoding, parsed strictly.

Wire format (version 2): compact JSON with sorted keys, ASCII only, integers only (no floats)::

    {"author":"02..","body":{...},"kind":"transfer","net":"neuroshard-main","seq":3,
     "sig":"<64-byte r||s hex>","ts":1700000000000,"v":2}

Versions. 2 (this release) added to proofs their work span, measured layer cost and work root,
and to challenges the committed step a verifier re-ran and its evidence. Records of version 1
(the previous release, whose ledgers volunteers still hold; it had no ``receipt``) parse with the version-1 bodies
(``V1_SCHEMAS``; every other kind is unchanged) and count under the rules they were made under
(``legacy.py``). This release writes version 2 only.

The signature covers ``b"NSREC1\\n"`` + the same object without ``sig``; the record id is the
SHA-256 of that signed payload, so it does not depend on the signature encoding. ``from_bytes``
accepts only bytes that re-encode to themselves (one record, one encoding), refuses unknown
versions, kinds and fields, wrong types and oversized input with an ``InvalidRecord`` that says
why; it never trusts a field it has not checked. Rewards and slashes are not records: every
node derives them from the proofs and challenges it holds (``state.py``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.crypto.errors import InvalidRecord
from app.crypto.keys import PrivateKey, PublicKey, is_valid_address, verify
from app.node.economics.constants import MAX_SUPPLY_UNITS, PROOF_KINDS, ROLES

VERSION = 2
"""The version this release signs; see the module docstring for what changed since 1."""
V1 = 1
MAX_RECORD_BYTES = 16_384
"""A proposal of 256 merges is ~8 KiB; anything larger is refused before parsing."""
SIGN_PREFIX = b"NSREC1\n"
SEQUENCED_KINDS = ("transfer", "stake", "unstake", "challenge", "proposal", "vote")
"""Kinds that spend from an account: they carry the account's next sequence number (1, 2, ...)."""
DERIVED_KINDS = ("reward", "slash", "mint")


# --- field validators: each returns the value or raises InvalidRecord ---------------------------

def _int_in(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if type(value) is not int or not lo <= value <= hi:
            raise InvalidRecord(f"expected an integer in [{lo}, {hi}], got {value!r:.40}")
        return value
    return check


def _text(max_len: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or len(value) > max_len or not value.isprintable():
            raise InvalidRecord(f"expected printable text of at most {max_len} characters")
        return value
    return check


def _hex(n_bytes: int, allow_empty: bool = False) -> Callable[[Any], str]:
    exact = re.compile(f"[0-9a-f]{{{2 * n_bytes}}}").fullmatch  # one C call per field

    def check(value: Any) -> str:
        if allow_empty and value == "":
            return value
        if not isinstance(value, str) or len(value) != 2 * n_bytes:
            raise InvalidRecord(f"expected {n_bytes} bytes as lowercase hex")
        if exact(value) is None:
            raise InvalidRecord("not lowercase hexadecimal")
        return value
    return check


def _choice(options: tuple[Any, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) not in (str, int, bool) or value not in options:
            raise InvalidRecord(f"expected one of {options}")
        return value
    return check


def _address(value: Any) -> str:
    if not is_valid_address(value):
        raise InvalidRecord("bad address (prefix, length or checksum)")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise InvalidRecord("expected true or false")
    return value


def _token_hex(value: Any) -> bool:
    if not isinstance(value, str) or not 2 <= len(value) <= 128 or len(value) % 2 or value != value.lower():
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _merges(value: Any) -> list[list[str]]:
    """Byte-level BPE merges, as the tokenizer's ``apply_merges`` takes them: pairs of token
    bytes, each written as lowercase hex (1..64 bytes), since tokens need not be valid UTF-8."""
    if not isinstance(value, list) or not 1 <= len(value) <= 256:
        raise InvalidRecord("merges must be a list of 1..256 pairs")
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and all(_token_hex(t) for t in pair)):
            raise InvalidRecord("each merge is a pair of tokens, each 1..64 bytes as lowercase hex")
    return value


def _allocations(value: Any) -> list[list[Any]]:
    if not isinstance(value, list) or not 1 <= len(value) <= 200:
        raise InvalidRecord("allocations must be a list of 1..200 [address, amount] pairs")
    for item in value:
        if not (isinstance(item, list) and len(item) == 2):
            raise InvalidRecord("each allocation is [address, amount]")
        _address(item[0])
        _AMOUNT(item[1])
    return value


_AMOUNT = _int_in(0, MAX_SUPPLY_UNITS)
_COUNT = _int_in(0, 10**12)

SCHEMAS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "genesis": {"allocations": _allocations},
    "transfer": {"to": _address, "amount": _int_in(1, MAX_SUPPLY_UNITS), "fee": _AMOUNT,
                 "memo": _text(128)},
    "stake": {"amount": _int_in(1, MAX_SUPPLY_UNITS)},
    "unstake": {"amount": _int_in(1, MAX_SUPPLY_UNITS)},
    "proof": {"epoch": _int_in(0, 10**12), "nonce": _hex(16), "proof_kind": _choice(PROOF_KINDS),
              "batches": _COUNT, "tokens": _COUNT, "samples": _COUNT, "layers": _int_in(0, 4096),
              "role": _choice(ROLES), "tier": _choice((1, 2, 3, 4, 5)), "uptime_ms": _COUNT,
              "async_mode": _bool, "model_before": _hex(32, True), "model_after": _hex(32, True),
              "work_start_ms": _int_in(0, 2**53), "work_end_ms": _int_in(0, 2**53),
              "layer_us": _int_in(0, 10**9), "work_root": _hex(32, True)},
    "challenge": {"proof_id": _hex(32), "verdict": _choice(("fail", "pass")), "step": _int_in(0, 10**6),
                  "leaf": _hex(32), "output_hash": _hex(32), "error_ppm": _int_in(0, 10**12)},
    "proposal": {"title": _text(200), "merges": _merges},
    "vote": {"proposal_id": _hex(32), "approve": _bool},
    "receipt": {"server": _address, "epoch": _int_in(0, 10**12), "samples": _int_in(1, 10**9)},
    "async_receipt": {"contributor": _address, "epoch": _int_in(0, 10**12), "first_layer": _int_in(0, 4096),
              "layers": _int_in(1, 4096), "batches": _int_in(1, 10**6)},
}
V1_SCHEMAS: dict[str, dict[str, Callable[[Any], Any]]] = {
    **SCHEMAS,
    "proof": {name: check for name, check in SCHEMAS["proof"].items()
              if name not in ("work_start_ms", "work_end_ms", "layer_us", "work_root")},
    "challenge": {"proof_id": _hex(32), "verdict": _choice(("fail", "pass")), "evidence": _hex(32)},
}
del V1_SCHEMAS["receipt"]  # new in version 2
del V1_SCHEMAS["async_receipt"]  # new in version 2
"""Version 1 bodies, exactly as the previous release wrote them (git 8a0f18d)."""
SCHEMAS_BY_VERSION = {V1: V1_SCHEMAS, VERSION: SCHEMAS}
_FIELDS = {v: {kind: frozenset(schema) for kind, schema in s.items()} for v, s in SCHEMAS_BY_VERSION.items()}
_NET, _AUTHOR, _SIG, _TS, _SEQ = _text(64), _hex(33), _hex(64), _int_in(0, 2**53), _int_in(1, 2**53)
"""The envelope's validators, built once (``_check_fields`` runs for every record received)."""
TOP_LEVEL = {"v", "net", "kind", "author", "ts", "seq", "body", "sig"}


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
"""Built once: ``json.dumps`` with options builds a new encoder per call (benchmarks/ledger.py)."""


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The one encoding that is signed and hashed: sorted keys, no spaces, ASCII."""
    return _ENCODER.encode(obj).encode("ascii")


@dataclass(frozen=True)
class Record:
    """A signed ledger record. Build with ``Record.create``; parse peers' bytes with ``from_bytes``."""

    kind: str
    network: str
    author: bytes
    timestamp_ms: int
    seq: int
    body: Mapping[str, Any]
    signature: bytes = b""
    version: int = VERSION
    _payload: bytes = field(default=b"", compare=False, repr=False)
    _raw: bytes = field(default=b"", compare=False, repr=False)

    @classmethod
    def create(cls, key: PrivateKey, kind: str, network: str, timestamp_ms: int, body: Mapping[str, Any],
               seq: int = 0) -> Record:
        """Builds, validates and signs a record with ``key`` (the author)."""
        unsigned = cls(kind=kind, network=network, author=key.public_key.data, timestamp_ms=timestamp_ms,
                       seq=seq, body=dict(body))
        _check_fields(unsigned._unsigned_dict())
        signed = cls(kind=kind, network=network, author=unsigned.author, timestamp_ms=timestamp_ms,
                     seq=seq, body=dict(body), signature=key.sign(unsigned.signing_payload()))
        return signed

    def _unsigned_dict(self) -> dict[str, Any]:
        return {"v": self.version, "net": self.network, "kind": self.kind, "author": self.author.hex(),
                "ts": self.timestamp_ms, "seq": self.seq, "body": dict(self.body)}

    def signing_payload(self) -> bytes:
        # Computed once: the id, the signature check and storage all need it, and re-encoding the
        # JSON was most of the ledger's own cost per record (benchmarks/ledger.py).
        if not self._payload:
            object.__setattr__(self, "_payload", SIGN_PREFIX + canonical_json(self._unsigned_dict()))
        return self._payload

    @functools.cached_property
    def record_id(self) -> str:
        """Hex SHA-256 of the signed payload: the record's name in gossip and in the database
        (cached in the instance: a replay reads it a dozen times per record)."""
        return hashlib.sha256(self.signing_payload()).hexdigest()

    @property
    def author_address(self) -> str:
        return PublicKey(self.author).address

    def to_bytes(self) -> bytes:
        if not self._raw:  # a parsed record keeps the exact bytes it came as (they are canonical)
            data = self._unsigned_dict()
            data["sig"] = self.signature.hex()
            object.__setattr__(self, "_raw", canonical_json(data))
        return self._raw

    def verify_signature(self) -> bool:
        return verify(self.author, self.signing_payload(), self.signature)

    @classmethod
    def from_bytes(cls, raw: bytes, check_signature: bool = True) -> Record:
        """Strict parse of untrusted bytes; raises ``InvalidRecord`` with the reason."""
        data = _decode(raw)
        _check_fields(data)
        raw = bytes(raw)
        # The signed payload is these canonical bytes without the "sig" member: keys are sorted and
        # only "ts" and "v" (integers) follow "sig", and no body field is named "sig", so its last
        # occurrence is the member. Cutting it out saves re-encoding the record.
        cut = raw.rfind(b',"sig":"')
        payload = SIGN_PREFIX + raw[:cut] + raw[cut + len(b',"sig":"') + len(data["sig"]) + 1:]
        record = cls(kind=data["kind"], network=data["net"], author=bytes.fromhex(data["author"]),
                     timestamp_ms=data["ts"], seq=data["seq"], body=data["body"],
                     signature=bytes.fromhex(data["sig"]), version=data["v"], _raw=raw, _payload=payload)
        if check_signature:
            record.check_signature()
        return record

    def check_signature(self) -> None:
        """Raises ``InvalidRecord`` unless the signature verifies (low-S) for the author's key."""
        if not self.verify_signature():
            raise InvalidRecord("signature does not verify for the author's key")


def _reject_constant(name: str) -> Any:
    raise InvalidRecord(f"non-finite number {name} is not allowed")


def _reject_float(text: str) -> Any:
    raise InvalidRecord("floating-point numbers are not allowed; amounts are integer micro-NEURO")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise InvalidRecord("duplicate key in JSON object")
    return result


_DECODER = json.JSONDecoder(parse_float=_reject_float, parse_constant=_reject_constant,
                            object_pairs_hook=_unique_keys)
"""Built once: ``json.loads`` with hooks builds a new decoder (and its scanner) per call."""


def _decode(raw: bytes) -> dict[str, Any]:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise InvalidRecord("record must be bytes")
    raw = bytes(raw)
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidRecord(f"record of {len(raw)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        text = raw.decode("ascii")
        data = _DECODER.decode(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidRecord(f"not canonical JSON: {type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise InvalidRecord("top level must be an object")
    if set(data) != TOP_LEVEL:
        raise InvalidRecord(f"fields must be exactly {sorted(TOP_LEVEL)}")
    if canonical_json(data) != raw:
        raise InvalidRecord("not in canonical encoding (sorted keys, no spaces, ASCII)")
    _SIG(data["sig"])
    return data


def _check_fields(data: Mapping[str, Any]) -> None:
    if type(data["v"]) is not int or data["v"] not in SCHEMAS_BY_VERSION:
        raise InvalidRecord(f"unknown version {data['v']!r:.20}")
    schemas = SCHEMAS_BY_VERSION[data["v"]]
    kind = data["kind"]
    if kind in DERIVED_KINDS:
        raise InvalidRecord(f"'{kind}' entries are derived by every node, never accepted from peers")
    if kind not in schemas:
        raise InvalidRecord(f"unknown kind {kind!r:.40}")
    _NET(data["net"])
    _AUTHOR(data["author"])
    _TS(data["ts"])
    if kind in SEQUENCED_KINDS:
        _SEQ(data["seq"])
    elif data["seq"] != 0 or type(data["seq"]) is not int:
        raise InvalidRecord(f"'{kind}' records carry seq 0")
    body = data["body"]
    schema = schemas[kind]
    if not isinstance(body, dict) or body.keys() != _FIELDS[data["v"]][kind]:
        raise InvalidRecord(f"'{kind}' body must have exactly the fields {sorted(schema)}")
    for name, check in schema.items():
        try:
            check(body[name])
        except InvalidRecord as exc:
            raise InvalidRecord(f"{kind}.{name}: {exc.reason}") from None
    if not _is_public_key(data["author"]):
        raise InvalidRecord("author is not a secp256k1 public key")


@functools.lru_cache(maxsize=4096)
def _is_public_key(author_hex: str) -> bool:
    """The on-curve check is pure Python and authors repeat (one key, many records): cache it."""
    try:
        PublicKey(bytes.fromhex(author_hex))
    except ValueError:
        return False
    return True
