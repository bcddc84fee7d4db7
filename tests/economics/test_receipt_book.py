"""The receiver's side of data-mode pay: what it owes each server and signs for once it trained."""

from __future__ import annotations

import time
from pathlib import Path

from app.crypto.keys import PrivateKey
from app.node.config import NodeConfig
from app.node.economics.ponw import MAX_SAMPLES_PER_SECOND
from app.node.runtime.data_receipts import ReceiptBook
from app.node.runtime.economy import EconomyService
from app.wallet.keystore import Keystore

SERVER = PrivateKey((41).to_bytes(32, "big")).address


def test_the_book_owes_each_server_its_samples_never_itself_and_bounds_each_receipt() -> None:
    me = PrivateKey((40).to_bytes(32, "big")).address
    book = ReceiptBook(me)
    book.note([(SERVER, 300), (me, 50), (SERVER, 200), ("other", 0)])
    assert book.owed() == {SERVER: 500}
    assert book.due(cap=400) == [(SERVER, 400)]
    book.signed(SERVER, 400)
    assert book.due(cap=400) == [(SERVER, 100)] and book.signed_total() == {SERVER: 400}
    book.signed(SERVER, 100)
    assert book.owed() == {} and book.due(cap=400) == []


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_an_economy_signs_no_receipt_before_it_trained(tmp_path: Path) -> None:
    """The ledger counts a receipt only from a node with an accepted training proof: before it has
    one, the node signs nothing and keeps what it owes for a later epoch."""
    key = PrivateKey((42).to_bytes(32, "big"))
    keystore = Keystore(tmp_path)
    config = NodeConfig(data_dir=tmp_path, port=0, devnet=True, economics={"preset": "devnet"})
    clock = _Clock(time.time())
    economy = EconomyService(key, config, lambda event: None, "T3", keystore=keystore, clock=clock)
    try:
        economy.receipts.note([(SERVER, MAX_SAMPLES_PER_SECOND * 2)])
        assert economy.sign_receipts(int(clock.t * 1000)) == 0
        assert economy.receipts.owed() == {SERVER: MAX_SAMPLES_PER_SECOND * 2}
    finally:
        economy.close()
