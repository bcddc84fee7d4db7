import pytest

from app.node import identity
from app.node.config import NodeConfig
from app.node.identity import IdentityError, load_node_key, provide_password
from app.wallet.keystore import Keystore


def fast_keystore(path):
    # No OS keyring in tests: the encrypted-file path, with a cheap scrypt.
    return Keystore(path, use_keyring=False, scrypt_n=2**10)


@pytest.fixture(autouse=True)
def no_password_env(monkeypatch, tmp_path):
    monkeypatch.delenv(identity.PASSWORD_ENV, raising=False)
    monkeypatch.delenv(identity.PASSWORD_FILE_ENV, raising=False)
    yield
    identity.forget_password(tmp_path)


def test_first_start_creates_a_wallet_and_later_starts_reuse_it(tmp_path) -> None:
    config = NodeConfig(data_dir=tmp_path)
    first = load_node_key(config, fast_keystore(tmp_path))
    again = load_node_key(config, fast_keystore(tmp_path))
    assert first.address == again.address
    assert first.to_bytes().hex() not in (tmp_path / "keystore.json").read_text()


def test_password_from_env_protects_the_wallet(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(identity.PASSWORD_ENV, "correct horse")
    config = NodeConfig(data_dir=tmp_path)
    key = load_node_key(config, fast_keystore(tmp_path))
    monkeypatch.setenv(identity.PASSWORD_ENV, "wrong")
    with pytest.raises(IdentityError, match="wrong wallet password"):
        load_node_key(config, fast_keystore(tmp_path))
    monkeypatch.delenv(identity.PASSWORD_ENV)
    with pytest.raises(IdentityError, match="password-protected"):
        load_node_key(config, fast_keystore(tmp_path))
    provide_password(tmp_path, "correct horse")
    assert load_node_key(config, fast_keystore(tmp_path)).address == key.address


def test_password_file(tmp_path, monkeypatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from a file\n")
    monkeypatch.setenv(identity.PASSWORD_FILE_ENV, str(secret))
    data = tmp_path / "node"
    key = load_node_key(NodeConfig(data_dir=data), fast_keystore(data))
    assert fast_keystore(data).unlock("from a file").address == key.address
    monkeypatch.setenv(identity.PASSWORD_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(IdentityError, match="cannot read"):
        load_node_key(NodeConfig(data_dir=data), fast_keystore(data))
