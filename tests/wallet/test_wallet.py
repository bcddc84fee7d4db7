import pytest

from app.crypto.keys import PrivateKey
from app.node.economics.constants import EconomicsConfig, neuro
from app.node.economics.ledger import Balance, Ledger
from app.node.economics.records import Record
from app.wallet.errors import InsufficientFunds, WalletError
from app.wallet.wallet import Wallet

T0 = 1_800_000_000_000
GENESIS = PrivateKey((7).to_bytes(32, "big"))
FRIEND = PrivateKey((8).to_bytes(32, "big"))


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> float:
        self.ms += 1
        return self.ms / 1000


@pytest.fixture()
def wallet(file_keystore, tmp_path):
    clock = Clock()
    config = EconomicsConfig.devnet(genesis_public_key=GENESIS.public_key.data.hex())
    ledger = Ledger(tmp_path / "ledger", config, clock=clock)
    address = file_keystore.create("pw").address
    genesis = Record.create(GENESIS, "genesis", config.network_id, T0, {"allocations": [[address, neuro(100)]]})
    assert ledger.submit(genesis.to_bytes()).accepted
    wallet = Wallet(file_keystore, ledger, clock=clock)
    wallet.unlock("pw")
    yield wallet
    ledger.close()


def test_send_goes_through_the_ledger(wallet):
    wallet.send(FRIEND.address, neuro(10), fee=100, memo="thanks")
    assert wallet.balance() == Balance(neuro(90) - 100, 0, 0)
    assert wallet.ledger.balance(FRIEND.address).available == neuro(10)
    assert [e.kind for e in wallet.history()] == ["send", "genesis"]


def test_stake_and_unstake_move_coins_between_buckets(wallet):
    wallet.stake(neuro(40))
    assert wallet.balance() == Balance(neuro(60), neuro(40), 0)
    wallet.unstake(neuro(15))
    assert wallet.balance() == Balance(neuro(60), neuro(25), neuro(15))


def test_overspending_and_bad_addresses_are_refused_before_signing(wallet):
    with pytest.raises(InsufficientFunds):
        wallet.send(FRIEND.address, neuro(100), fee=1)
    with pytest.raises(WalletError, match="not a valid"):
        wallet.send(FRIEND.address[:-1] + ("0" if FRIEND.address[-1] != "0" else "1"), 5)
    with pytest.raises(InsufficientFunds):
        wallet.unstake(1)
    assert wallet.ledger.next_seq(wallet.address) == 1


def test_locked_wallet_cannot_sign(wallet):
    wallet.lock()
    with pytest.raises(WalletError, match="locked"):
        wallet.send(FRIEND.address, 5)


def test_sequence_numbers_follow_each_other(wallet):
    for _ in range(3):
        wallet.send(FRIEND.address, 1)
    assert wallet.ledger.next_seq(wallet.address) == 4
    assert wallet.ledger.balance(FRIEND.address).available == 3
