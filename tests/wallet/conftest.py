import keyring.backend
import keyring.errors
import pytest

from app.wallet.keystore import Keystore

FAST_N = 2**14  # tests use a cheap scrypt; production uses 2**17 (~0.37 s)


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring that keeps entries in a dict: a stand-in OS keyring with no real secrets."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.entries.get((service, username))

    def set_password(self, service, username, password):
        self.entries[(service, username)] = password

    def delete_password(self, service, username):
        if self.entries.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError("no such entry")


@pytest.fixture()
def memory_keyring() -> MemoryKeyring:
    return MemoryKeyring()


@pytest.fixture()
def file_keystore(tmp_path) -> Keystore:
    """The headless-Linux case: keyring's own fail backend, which raises NoKeyringError."""
    from keyring.backends.fail import Keyring as FailKeyring

    return Keystore(tmp_path / "data", service_name="neuroshard-test", backend=FailKeyring(), scrypt_n=FAST_N)


@pytest.fixture()
def keyring_keystore(tmp_path, memory_keyring) -> Keystore:
    return Keystore(tmp_path / "data-keyring", service_name="neuroshard-test", backend=memory_keyring,
                    scrypt_n=FAST_N)
