"""The receiver's side of data-mode pay: what it owes each server and signs for once it trained."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    clock = _Clock(1_800_000_000.0)  # a fixed canonical time: nothing here reads the wall clock
    economy = EconomyService(key, config, lambda event: None, "T3", keystore=keystore, clock=clock)
    try:
        economy.receipts.note([(SERVER, MAX_SAMPLES_PER_SECOND * 2)])
        assert economy.sign_receipts(int(clock.t * 1000)) == 0
        assert economy.receipts.owed() == {SERVER: MAX_SAMPLES_PER_SECOND * 2}
    finally:
        economy.close()


@pytest.mark.parametrize("window_ms", [10_000, 3_000])  # 3 s: the devnet preset's own, whose last open epoch is e + 3
def test_a_receipt_that_reaches_the_server_late_is_still_claimed_while_its_window_is_open(
        tmp_path: Path, window_ms: int) -> None:
    """The server proves an epoch's receipted samples two epochs later; a receipt gossip brings
    after that pass is claimed on a later one, as long as the epoch's challenge window is open
    (to its last epoch: the devnet's 3 s window left a single pass before, and a loaded devnet
    whose loop missed it, or whose receipt came a moment late, was never paid for its data)."""
    from app.node.economics import ponw
    from app.node.economics.records import Record

    settings = {"preset": "devnet", "challenge_window_ms": window_ms}
    config = NodeConfig(data_dir=tmp_path, port=0, devnet=True, economics=settings)
    server, receiver = PrivateKey((43).to_bytes(32, "big")), PrivateKey((44).to_bytes(32, "big"))
    clock = _Clock(1_800_000_000.0)  # a fixed canonical time, at the start of an epoch
    economy = EconomyService(server, config, lambda event: None, "T3", keystore=Keystore(tmp_path), clock=clock)
    try:
        epoch_ms = economy.config.epoch_ms
        served = int(clock.t * 1000) // epoch_ms
        trained = ponw.make_proof(receiver, economy.config, epoch=served, kind="training", timestamp_ms=served * epoch_ms + 50,
                                  work=ponw.WorkFigures(batches=1, layers=1, role="worker", tier=3,
                                                        work_start_ms=served * epoch_ms + 1, work_end_ms=served * epoch_ms + 40,
                                                        layer_us=1000),
                                  model_before=b"\x01" * 32, model_after=b"\x02" * 32)
        receipt = ponw.make_receipt(receiver, economy.config, server=server.address, epoch=served, samples=70,
                                    timestamp_ms=served * epoch_ms + 60)

        def close_at(epoch: int) -> list[str]:
            clock.t = (epoch * epoch_ms + 10) / 1000
            return economy.close_epoch()

        assert economy.ledger.submit(trained.to_bytes(), served * epoch_ms + 100).accepted
        assert "data" not in close_at(served + 2)  # the receipt has not arrived yet
        assert economy.ledger.submit(receipt.to_bytes(), (served + 2) * epoch_ms + 500).accepted
        assert "data" in close_at(served + 3)  # claimed on the next pass
        assert "data" not in close_at(served + 4)  # and only once
        proofs = [Record.from_bytes(r) for r in economy.ledger.records_since(0, 100)[0]]
        data = [p for p in proofs if p.kind == "proof" and p.body["proof_kind"] == "data"]
        assert [(p.body["epoch"], p.body["samples"]) for p in data] == [(served, 70)]
    finally:
        economy.close()
