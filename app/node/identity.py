"""The node's identity: its secp256k1 wallet key, unlocked once at start-up.

Where the key comes from, in order: a password handed over in memory by the app after its
unlock dialog (:func:`provide_password`), ``NEUROSHARD_PASSWORD``, the file named by
``NEUROSHARD_PASSWORD_FILE``. With an OS keyring no password is needed at all.

An unattended server with neither a keyring nor a password still has to start (the main job
runs on embedded defaults), so its wallet is sealed with the publicly known
:data:`UNPROTECTED_PASSPHRASE`: the same protection as an SSH key without a passphrase (a
0600 file in the user's data dir), said loudly in the log at every start, and replaced the
moment the volunteer sets a password. The original implementation kept a wallet token in plain
text in its config file; this never writes a secret anywhere but the keystore.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from app.crypto.keys import PrivateKey
from app.node.config import NodeConfig
from app.wallet.errors import WalletError, WrongPassword
from app.wallet.keystore import Keystore

log = logging.getLogger("neuroshard.identity")
UNPROTECTED_PASSPHRASE = "neuroshard-unprotected-wallet"
PASSWORD_ENV = "NEUROSHARD_PASSWORD"
PASSWORD_FILE_ENV = "NEUROSHARD_PASSWORD_FILE"

_provided: dict[Path, str] = {}
_unlocked_early: dict[Path, PrivateKey] = {}
_lock = threading.Lock()


class IdentityError(WalletError):
    """The node cannot get its key; the message says what the volunteer can do."""


def provide_password(data_dir: Path, password: str) -> None:
    """Hand the wallet password to the node in memory (the app calls this after unlocking)."""
    with _lock:
        _provided[Path(data_dir).resolve()] = password


def forget_password(data_dir: Path) -> None:
    with _lock:
        _provided.pop(Path(data_dir).resolve(), None)


def _password_for(data_dir: Path) -> str | None:
    with _lock:
        given = _provided.get(Path(data_dir).resolve())
    if given:
        return given
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    path = os.environ.get(PASSWORD_FILE_ENV)
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise IdentityError(f"cannot read {PASSWORD_FILE_ENV}={path}: {exc.strerror}") from None
    return None


def unlock_before_start(config: NodeConfig, keystore: Keystore | None = None) -> str | None:
    """Unlock an existing wallet now, before the slow start-up work (the hardware benchmark), so a
    wrong password is reported at once; returns its address. The node's own :func:`load_node_key`
    for this data dir then takes this key instead of unlocking a second time. A first start
    creates nothing here (None): the node creates the wallet under its data-dir lock, and a new
    wallet has no password to get wrong."""
    store = keystore or Keystore(config.data_dir)
    if not store.has_key():
        return None
    key = load_node_key(config, store)
    with _lock:
        _unlocked_early[Path(config.data_dir).resolve()] = key
    return key.address


def load_node_key(config: NodeConfig, keystore: Keystore | None = None) -> PrivateKey:
    """Unlock the wallet in ``config.data_dir``, creating one on first start."""
    store = keystore or Keystore(config.data_dir)
    with _lock:
        early = _unlocked_early.pop(Path(config.data_dir).resolve(), None)
    if early is not None and store.address == early.address:  # the same wallet, unlocked just before
        return early
    password = _password_for(config.data_dir)
    if not store.has_key():
        key = store.create(password or UNPROTECTED_PASSPHRASE)
        if store.backend_name == "file" and not password:
            _warn_unprotected()
        log.info("created wallet %s (key kept in the %s)", key.address,
                 "OS keyring" if store.backend_name == "keyring" else "encrypted keystore file")
        return key
    if store.backend_name == "keyring":
        return store.unlock()
    try:
        return store.unlock(password or UNPROTECTED_PASSPHRASE)
    except WrongPassword:
        if password:
            raise IdentityError("wrong wallet password: check NEUROSHARD_PASSWORD (or the app's unlock dialog)") from None
        raise IdentityError(
            f"the wallet in {config.data_dir} is password-protected: start the app to unlock it, "
            f"or set {PASSWORD_ENV} / {PASSWORD_FILE_ENV} for a headless node"
        ) from None


def _warn_unprotected() -> None:
    log.warning(
        "no OS keyring and no password: the wallet key is sealed with a known passphrase. "
        "Set %s (or a password in the app) to protect it.", PASSWORD_ENV,
    )
