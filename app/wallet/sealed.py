"""Password-sealed secrets on disk: scrypt + AES-256-GCM, written atomically with mode 0600.

Format (JSON, version 1)::

    {"version": 1, "kdf": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": hex16,
     "nonce": hex12, "ciphertext": hex(secret + 16-byte tag), "address": "ns1..."}

scrypt with n = 2**17, r = 8, p = 1 costs ~0.37 s and 128 MiB here (PLATFORM.md): slow enough
to make password guessing expensive, fast enough for an unlock at start-up. The address is
authenticated as associated data, so a file whose address was edited fails to open. Parameters
read from a file are bounded before use: a hostile file cannot ask for a terabyte of scrypt.
This improves on Electrum's keystore (double SHA-256 of the password; see STYLE.md).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from app.wallet.errors import KeystoreCorrupted, WrongPassword

VERSION = 1
DEFAULT_SCRYPT_N = 2**17
MIN_SCRYPT_N, MAX_SCRYPT_N = 2**10, 2**20
MAX_FILE_BYTES = 4096
_AAD = b"neuroshard-keystore-v1:"


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode("utf-8"))


def seal(secret: bytes, password: str, address: str, scrypt_n: int = DEFAULT_SCRYPT_N) -> bytes:
    """Encrypts ``secret`` under ``password``; returns the file content."""
    if not password:
        raise ValueError("a password is required to encrypt the keystore")
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    key = _derive(password, salt, scrypt_n, 8, 1)
    ciphertext = AESGCM(key).encrypt(nonce, secret, _AAD + address.encode())
    doc = {"version": VERSION, "kdf": "scrypt", "n": scrypt_n, "r": 8, "p": 1, "salt": salt.hex(),
           "nonce": nonce.hex(), "ciphertext": ciphertext.hex(), "address": address}
    return json.dumps(doc, sort_keys=True, indent=1).encode()


def _parse(content: bytes) -> dict[str, Any]:
    if len(content) > MAX_FILE_BYTES:
        raise KeystoreCorrupted("keystore file is too large to be a NeuroShard keystore")
    try:
        doc = json.loads(content.decode("utf-8"))
        ok = (isinstance(doc, dict) and doc.get("version") == VERSION and doc.get("kdf") == "scrypt"
              and all(type(doc.get(k)) is int for k in ("n", "r", "p"))
              and all(isinstance(doc.get(k), str) for k in ("salt", "nonce", "ciphertext", "address")))
        if not ok:
            raise KeystoreCorrupted("keystore file has missing or wrong fields (or an unknown version)")
        for name in ("salt", "nonce", "ciphertext"):
            doc[name] = bytes.fromhex(doc[name])
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError):  # KeystoreCorrupted passes through
        raise KeystoreCorrupted("keystore file is damaged (not valid JSON/hex); restore a backup") from None
    n = doc["n"]
    if not (MIN_SCRYPT_N <= n <= MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= doc["r"] <= 16 and doc["p"] == 1):
        raise KeystoreCorrupted("keystore file has out-of-range scrypt parameters")
    if len(doc["nonce"]) != 12 or len(doc["salt"]) < 8 or len(doc["ciphertext"]) != 32 + 16:
        raise KeystoreCorrupted("keystore file has a damaged salt, nonce or ciphertext")
    return doc


def unseal(content: bytes, password: str) -> tuple[bytes, str]:
    """Decrypts file content; returns (secret, address). ``WrongPassword`` / ``KeystoreCorrupted``.

    AES-GCM cannot tell a wrong password from a flipped ciphertext bit: both fail the tag. The
    structure is validated first, so damage to the framing is reported as corruption.
    """
    doc = _parse(content)
    key = _derive(password, doc["salt"], doc["n"], doc["r"], doc["p"])
    try:
        secret = AESGCM(key).decrypt(doc["nonce"], doc["ciphertext"], _AAD + doc["address"].encode())
    except InvalidTag:
        raise WrongPassword() from None
    return secret, doc["address"]


def write_atomic(path: Path, content: bytes) -> None:
    """temp file in the same dir + fsync + rename (+ fsync of the dir), mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
