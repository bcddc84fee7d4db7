"""Where the volunteer's private key lives: the OS keyring, or an encrypted file as fallback.

At creation the keyring is probed (write, read back, delete a test entry). If that works the
secret goes there (macOS Keychain, Windows Credential Locker, Secret Service); the OS guards it
with the login session, so ``unlock`` needs no password. Where no keyring is usable (headless
Linux and CI resolve to ``fail.Keyring``, PLATFORM.md) the secret is sealed in
``keystore.json`` under the data dir with the volunteer's password (``sealed.py``). A small,
non-secret ``wallet.json`` records which backend holds the key and its address, so the node
never creates a second wallet on top of the first.

Nothing here logs; error messages carry addresses, never key material. Replacing an existing key
needs ``overwrite=True`` and happens only after the new key has been fully validated (wrong
password or damaged backup -> nothing on disk changes); the old sealed file is kept beside it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import keyring
import keyring.errors

from app.crypto.keys import KeyError_, PrivateKey
from app.wallet import phrase, sealed
from app.wallet.errors import (
    KeystoreCorrupted,
    KeystoreExists,
    KeystoreMissing,
    NoKeyring,
    WalletError,
    WrongPassword,
)

__all__ = ["Keystore", "WalletError", "WrongPassword", "KeystoreCorrupted", "KeystoreExists",
           "KeystoreMissing", "NoKeyring"]
META_FILE = "wallet.json"
KEYSTORE_FILE = "keystore.json"
_PROBE_USER = "__neuroshard_probe__"


class Keystore:
    """Create, unlock, import, export and restore the node's key (see the module docstring)."""

    def __init__(self, data_dir: Path, service_name: str = "neuroshard-node", *, backend: Any = None,
                 use_keyring: bool = True, scrypt_n: int = sealed.DEFAULT_SCRYPT_N) -> None:
        self.data_dir = Path(data_dir)
        self.service_name = service_name
        self._backend = backend
        self._use_keyring = use_keyring
        self.scrypt_n = scrypt_n

    # --- state ------------------------------------------------------------------------------

    @property
    def meta_path(self) -> Path:
        return self.data_dir / META_FILE

    @property
    def file_path(self) -> Path:
        return self.data_dir / KEYSTORE_FILE

    def _meta(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            raise KeystoreCorrupted(f"{self.meta_path} is damaged; restore it from a backup") from None
        if not isinstance(doc, dict) or doc.get("backend") not in ("keyring", "file") or not isinstance(
                doc.get("address"), str):
            raise KeystoreCorrupted(f"{self.meta_path} has unexpected content; restore it from a backup")
        return doc

    def has_key(self) -> bool:
        return self._meta() is not None

    @property
    def address(self) -> str | None:
        meta = self._meta()
        return meta["address"] if meta else None

    @property
    def backend_name(self) -> str | None:
        """"keyring" or "file" for an existing wallet, None when there is none yet."""
        meta = self._meta()
        return meta["backend"] if meta else None

    # --- keyring ----------------------------------------------------------------------------

    def _keyring(self) -> Any:
        return self._backend if self._backend is not None else keyring.get_keyring()

    def keyring_usable(self) -> bool:
        """Probes the keyring with a throw-away entry; any failure means "use the file"."""
        if not self._use_keyring:
            return False
        ring = self._keyring()
        token = f"probe-{time.time_ns()}"
        try:
            ring.set_password(self.service_name, _PROBE_USER, token)
            ok = ring.get_password(self.service_name, _PROBE_USER) == token
            ring.delete_password(self.service_name, _PROBE_USER)
            return ok
        except Exception:  # NoKeyringError, locked keychain, D-Bus errors: all mean "not usable"
            return False

    def _keyring_user(self, address: str) -> str:
        return f"wallet:{address}"

    # --- create / import --------------------------------------------------------------------

    def create(self, password: str) -> PrivateKey:
        """A new random key. ``password`` seals the file fallback (unused with a keyring)."""
        key = PrivateKey.generate()
        self._save(key, password, overwrite=False)
        return key

    def import_key(self, secret: bytes, password: str, overwrite: bool = False) -> PrivateKey:
        try:
            key = PrivateKey(secret)
        except KeyError_ as exc:
            raise WalletError(f"cannot import key: {exc}") from None
        self._save(key, password, overwrite)
        return key

    def import_phrase(self, words: str, password: str, overwrite: bool = False) -> PrivateKey:
        return self.import_key(phrase.decode(words), password, overwrite)

    def _save(self, key: PrivateKey, password: str, overwrite: bool) -> None:
        existing = self._meta()
        if existing is not None and not overwrite:
            raise KeystoreExists(existing["address"])
        if existing is not None and self.file_path.exists():
            sealed.write_atomic(self.data_dir / f"{KEYSTORE_FILE}.replaced-{int(time.time())}",
                                self.file_path.read_bytes())
        if self.keyring_usable():
            try:
                self._keyring().set_password(self.service_name, self._keyring_user(key.address),
                                             key.to_bytes().hex())
                backend = "keyring"
            except Exception:
                backend = "file"  # keyring failed after the probe: fall back rather than lose the key
        else:
            backend = "file"
        if backend == "file":
            sealed.write_atomic(self.file_path, sealed.seal(key.to_bytes(), password, key.address, self.scrypt_n))
        meta = {"version": 1, "backend": backend, "address": key.address, "service": self.service_name}
        sealed.write_atomic(self.meta_path, json.dumps(meta, indent=1).encode())

    # --- unlock / export --------------------------------------------------------------------

    def unlock(self, password: str | None = None) -> PrivateKey:
        """The node's key. ``WrongPassword``, ``KeystoreCorrupted``, ``KeystoreMissing``, ``NoKeyring``."""
        meta = self._meta()
        if meta is None:
            raise KeystoreMissing()
        if meta["backend"] == "keyring":
            secret = self._read_keyring(meta["address"])
        else:
            secret = self._read_file(password, meta["address"])
        try:
            key = PrivateKey(secret)
        except KeyError_:
            raise KeystoreCorrupted("stored key is not a valid secp256k1 key; restore a backup") from None
        if key.address != meta["address"]:
            raise KeystoreCorrupted("stored key does not match the wallet's address; restore a backup")
        return key

    def _read_keyring(self, address: str) -> bytes:
        try:
            value = self._keyring().get_password(self.service_name, self._keyring_user(address))
        except Exception:
            raise NoKeyring("the OS keyring holding this wallet is not available; unlock the keyring "
                            "(log in to the desktop session) or restore a backup") from None
        if value is None:
            raise KeystoreCorrupted("the OS keyring no longer holds this wallet's key; restore a backup")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise KeystoreCorrupted("the keyring entry for this wallet is damaged; restore a backup") from None

    def _read_file(self, password: str | None, address: str) -> bytes:
        if not password:
            raise WrongPassword()
        try:
            content = self.file_path.read_bytes()
        except FileNotFoundError:
            raise KeystoreCorrupted(f"{self.file_path} is missing; restore a backup") from None
        secret, sealed_address = sealed.unseal(content, password)
        if sealed_address != address:
            raise KeystoreCorrupted("keystore file belongs to another wallet; restore a backup")
        return secret

    def recovery_phrase(self, password: str | None = None) -> str:
        """The 24-word phrase of the current key (show it once, never log it)."""
        return phrase.encode(self.unlock(password).to_bytes())

    def export_backup(self, path: Path, password: str, unlock_password: str | None = None) -> Path:
        """Writes the key sealed with ``password`` to ``path`` (a file the volunteer keeps safe)."""
        key = self.unlock(unlock_password if unlock_password is not None else password)
        sealed.write_atomic(Path(path), sealed.seal(key.to_bytes(), password, key.address, self.scrypt_n))
        return Path(path)

    def restore_backup(self, path: Path, password: str, overwrite: bool = False) -> PrivateKey:
        """Reads a backup; the current key is replaced only if the backup opens and ``overwrite``."""
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise KeystoreCorrupted(f"cannot read backup {path}: {exc.strerror}") from None
        secret, address = sealed.unseal(content, password)
        try:
            matches = PrivateKey(secret).address == address
        except KeyError_:
            matches = False
        if not matches:
            raise KeystoreCorrupted("backup's key does not match its address; it is damaged")
        return self.import_key(secret, password, overwrite)
