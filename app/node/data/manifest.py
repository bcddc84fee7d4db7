"""The signed manifest of a genesis corpus: which shards exist, their SHA-256 and token counts.

A corpus is a list of shards, each a fixed-size array of genesis tokens stored as raw
little-endian uint16 (never pickle). The manifest lists every shard's hash and is signed by the
corpus's *genesis key* (secp256k1, app/crypto/keys.py); nodes check the signature against a
genesis public key they already trust (committed beside the bundled corpus, or handed out by a
devnet), then check every shard they fetch against its hash, so a data node cannot feed a
driver altered text.

The signed message is a domain prefix plus the manifest's canonical JSON (sorted keys, no
spaces) without the ``signature`` field, so any change to any field breaks the signature.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.crypto.keys import KeyError_, PrivateKey, PublicKey

FORMAT = "neuroshard-genesis-manifest"
FORMAT_VERSION = 1
SIGNING_DOMAIN = b"neuroshard-genesis-manifest-v1\n"
TOKENIZATION = "genesis-bytes-v1"
"""Shards hold genesis tokens: ids 0..255 are the UTF-8 bytes of the text, documents separated
by ``<eos>``. Merges voted in later are applied when the shards are loaded (loader.py)."""

GENESIS_VOCAB = 266
EOS_ID = 258
"""``<eos>`` in the genesis vocabulary: 256 bytes, then <pad>=256, <bos>=257, <eos>=258
(app/node/tokenizer.py uses the same layout; tests/data pins that they agree)."""

MAX_SHARD_TOKENS = 1 << 22
"""4M tokens = 8 MiB per shard at most: one gRPC message stays under the 16 MiB where
loopback throughput collapses (PLATFORM.md)."""

_SHARD_ID = re.compile(r"^shard-[0-9]{5,8}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class DataError(Exception):
    """Base class of genesis-data errors."""


class ManifestError(DataError):
    """A manifest is malformed, unsigned, or signed by a key we do not trust."""


class BadShard(DataError):
    """A shard's bytes do not match the manifest (hash, size or token range): refused."""


def shard_id_for(index: int) -> str:
    return f"shard-{index:05d}"


def is_valid_shard_id(shard_id: object) -> bool:
    """Shard ids become file names: only ``shard-NNNNN`` is accepted (no paths, no dots)."""
    return isinstance(shard_id, str) and bool(_SHARD_ID.match(shard_id))


@dataclass(frozen=True)
class ShardInfo:
    """One shard as the manifest describes it."""

    shard_id: str
    sha256: str
    tokens: int

    @property
    def nbytes(self) -> int:
        return 2 * self.tokens

    @property
    def filename(self) -> str:
        return self.shard_id + ".bin"


@dataclass(frozen=True)
class GenesisManifest:
    """A parsed, signature-checked manifest (use ``load`` / ``from_dict`` / ``build_genesis``)."""

    name: str
    shard_tokens: int
    shards: tuple[ShardInfo, ...]
    public_key: str
    signature: str = ""
    tokenization: str = TOKENIZATION
    vocab: int = GENESIS_VOCAB
    separator_id: int = EOS_ID
    _by_id: dict[str, ShardInfo] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_id.update({s.shard_id: s for s in self.shards})

    # -- queries --------------------------------------------------------------------------------
    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    @property
    def shard_ids(self) -> list[str]:
        return [s.shard_id for s in self.shards]

    def shard(self, shard_id: str) -> ShardInfo:
        try:
            return self._by_id[shard_id]
        except KeyError:
            raise BadShard(f"{shard_id!r} is not a shard of corpus {self.name!r}") from None

    def __contains__(self, shard_id: object) -> bool:
        return shard_id in self._by_id

    # -- signing --------------------------------------------------------------------------------
    def signing_payload(self) -> bytes:
        body = self.to_dict()
        body.pop("signature")
        return SIGNING_DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, key: PrivateKey) -> GenesisManifest:
        """A copy carrying ``key``'s public key and signature."""
        unsigned = GenesisManifest(self.name, self.shard_tokens, self.shards, key.public_key.data.hex(),
                                   "", self.tokenization, self.vocab, self.separator_id)
        return GenesisManifest(self.name, self.shard_tokens, self.shards, unsigned.public_key,
                               key.sign(unsigned.signing_payload()).hex(), self.tokenization,
                               self.vocab, self.separator_id)

    def verify(self, expected_public_key: bytes | str | PublicKey) -> None:
        """ManifestError unless signed by ``expected_public_key`` (bytes, hex or PublicKey)."""
        expected = _public_key_bytes(expected_public_key)
        if self.public_key != expected.hex():
            raise ManifestError(f"corpus {self.name!r} is signed by genesis key {self.public_key[:16]}…, "
                                f"not the trusted {expected.hex()[:16]}…; check which corpus this node "
                                "should use")
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            raise ManifestError("manifest signature is not hex") from None
        if not PublicKey(expected).verify(self.signing_payload(), signature):
            raise ManifestError(f"manifest of corpus {self.name!r} has an invalid signature: "
                                "it was altered after signing")

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "name": self.name,
            "tokenization": self.tokenization, "vocab": self.vocab, "separator_id": self.separator_id,
            "dtype": "uint16-le", "shard_tokens": self.shard_tokens, "total_tokens": self.total_tokens,
            "shards": [{"id": s.shard_id, "sha256": s.sha256, "tokens": s.tokens} for s in self.shards],
            "public_key": self.public_key, "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, d: Any) -> GenesisManifest:
        """Parse untrusted JSON data strictly; ManifestError saying what is wrong."""
        return _parse(d)

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path | str, expected_public_key: bytes | str | PublicKey) -> GenesisManifest:
        """Read, parse and verify a manifest file against the genesis key we trust."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"cannot read genesis manifest {path}: {exc}") from exc
        manifest = _parse(raw)
        manifest.verify(expected_public_key)
        return manifest


def _public_key_bytes(key: bytes | str | PublicKey) -> bytes:
    try:
        if isinstance(key, PublicKey):
            return key.data
        raw = bytes.fromhex(key.strip()) if isinstance(key, str) else bytes(key)
        return PublicKey(raw).data
    except (ValueError, KeyError_) as exc:
        raise ManifestError(f"the trusted genesis public key is malformed: {exc}") from exc


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ManifestError("invalid genesis manifest: " + message)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse(d: Any) -> GenesisManifest:
    _require(isinstance(d, dict), "top level must be an object")
    _require(d.get("format") == FORMAT, f"format must be {FORMAT!r}")
    _require(d.get("version") == FORMAT_VERSION, f"unsupported version {d.get('version')!r} "
             f"(this node reads {FORMAT_VERSION}; update the node)")
    _require(d.get("dtype") == "uint16-le", "dtype must be 'uint16-le'")
    _require(d.get("tokenization") == TOKENIZATION, f"tokenization must be {TOKENIZATION!r}")
    name, vocab, sep, size = d.get("name"), d.get("vocab"), d.get("separator_id"), d.get("shard_tokens")
    _require(isinstance(name, str) and 0 < len(name) <= 200, "name must be a short string")
    _require(vocab == GENESIS_VOCAB, f"vocab must be {GENESIS_VOCAB}")
    _require(_is_int(sep) and 256 <= sep < GENESIS_VOCAB, "separator_id must be a special token id")
    _require(_is_int(size) and 0 < size <= MAX_SHARD_TOKENS, f"shard_tokens must be in 1..{MAX_SHARD_TOKENS}")
    raw_shards = d.get("shards")
    _require(isinstance(raw_shards, list) and len(raw_shards) > 0, "shards must be a non-empty list")
    shards = tuple(_parse_shard(s, size) for s in raw_shards)
    _require(len({s.shard_id for s in shards}) == len(shards), "duplicate shard ids")
    _require(d.get("total_tokens") == sum(s.tokens for s in shards), "total_tokens does not match the shards")
    pub, sig = d.get("public_key"), d.get("signature")
    _require(isinstance(pub, str) and re.fullmatch(r"0[23][0-9a-f]{64}", pub) is not None,
             "public_key must be 33 bytes of hex")
    _require(isinstance(sig, str) and re.fullmatch(r"[0-9a-f]{128}", sig) is not None,
             "signature must be 64 bytes of hex")
    return GenesisManifest(name, size, shards, pub, sig, TOKENIZATION, vocab, sep)


def _parse_shard(s: Any, shard_tokens: int) -> ShardInfo:
    _require(isinstance(s, dict) and set(s) == {"id", "sha256", "tokens"},
             "each shard must be an object with exactly id, sha256, tokens")
    _require(is_valid_shard_id(s["id"]), f"bad shard id {s['id']!r}")
    _require(isinstance(s["sha256"], str) and _HEX64.match(s["sha256"]) is not None,
             f"{s['id']}: sha256 must be 64 lowercase hex digits")
    _require(_is_int(s["tokens"]) and 0 < s["tokens"] <= shard_tokens,
             f"{s['id']}: tokens must be in 1..{shard_tokens}")
    return ShardInfo(s["id"], s["sha256"], s["tokens"])
