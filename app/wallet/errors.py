"""Typed wallet errors. Messages tell the volunteer what to do and never contain key material."""

from __future__ import annotations


class WalletError(Exception):
    """Base class for everything the wallet refuses."""


class WrongPassword(WalletError):
    def __init__(self) -> None:
        super().__init__("wrong password: the keystore could not be decrypted (nothing was changed); if the "
                         "password is certainly right, the file is damaged: restore a backup")


class KeystoreCorrupted(WalletError):
    """The keystore or backup file is damaged or not a NeuroShard keystore."""


class KeystoreExists(WalletError):
    def __init__(self, address: str) -> None:
        super().__init__(
            f"a wallet already exists here ({address}); export a backup and pass overwrite=True to replace it")
        self.address = address


class KeystoreMissing(WalletError):
    def __init__(self) -> None:
        super().__init__("no wallet yet: create one, import a key or restore a backup")


class NoKeyring(WalletError):
    """No usable OS keyring (headless Linux, CI): the encrypted keystore file is used instead."""


class InsufficientFunds(WalletError):
    """The available balance does not cover the amount plus fee."""
