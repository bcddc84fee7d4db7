import sqlite3

import pytest

from app.node.economics.constants import EconomicsConfig, neuro
from app.node.economics.ledger import Balance, Ledger, LedgerError
from app.node.economics.records import Record
from app.node.economics.state import FEE_POOL

from .helpers import ALICE, BOB, CAROL, T0, THOUSAND, Devnet, submit_all


@pytest.fixture()
def net() -> Devnet:
    return Devnet()


@pytest.fixture()
def funded(net, tmp_path):
    ledger = net.ledger(tmp_path)
    assert ledger.submit(net.genesis_record({ALICE.address: THOUSAND}).to_bytes(), T0).accepted
    yield ledger
    ledger.close()


def test_a_byte_identical_copy_is_known_without_parsing_and_a_variant_is_still_checked(net, funded, monkeypatch):
    tx = net.transfer(ALICE, BOB, neuro(10), T0 + 1)
    assert funded.submit(tx.to_bytes(), T0 + 1).accepted
    parsed = []
    real = Record.from_bytes.__func__

    def spy(cls, raw, check_signature=True):  # noqa: ANN001, ANN202 - counts parses, parses for real
        parsed.append(raw)
        return real(cls, raw, check_signature)

    monkeypatch.setattr(Record, "from_bytes", classmethod(spy))
    again = funded.submit(tx.to_bytes(), T0 + 1)
    assert (again.status, again.record_id, parsed) == ("duplicate", tx.record_id, [])
    spaced = tx.to_bytes().replace(b',"sig":', b', "sig":')  # same content, not the canonical bytes
    refused = funded.submit(spaced, T0 + 1)
    assert refused.status == "rejected" and "canonical" in refused.reason and parsed == [spaced]
    assert funded.balance(BOB.address).available == neuro(10)


def test_transfer_moves_amount_and_burns_five_percent_of_fee(net, funded):
    submit_all(funded, [net.transfer(ALICE, BOB, neuro(10), T0 + 1, fee=1000)])
    assert funded.balance(ALICE.address) == Balance(THOUSAND - neuro(10) - 1000, 0, 0)
    assert funded.balance(BOB.address) == Balance(neuro(10), 0, 0)
    assert funded.balance(FEE_POOL).available == 950
    assert funded.totals()["burned"] == 50


def test_same_record_twice_is_a_duplicate_and_counts_once(net, funded):
    tx = net.transfer(ALICE, BOB, neuro(10), T0 + 1)
    first, again = submit_all(funded, [tx, tx])
    assert (first.status, again.status) == ("accepted", "duplicate")
    assert funded.balance(BOB.address).available == neuro(10)


def test_double_spend_refuses_both_records_and_flags_the_account(net, funded):
    pay_bob = net.transfer(ALICE, BOB, neuro(600), T0 + 1, seq=1)
    pay_carol = net.transfer(ALICE, CAROL, neuro(600), T0 + 2, seq=1)
    first, second = submit_all(funded, [pay_bob, pay_carol])
    assert first.accepted and second.status == "rejected" and "double spend" in second.reason
    assert funded.record_status(pay_bob.record_id)[0] == "conflict"
    assert funded.record_status(pay_carol.record_id)[0] == "conflict"
    assert funded.balance(BOB.address).available == 0
    assert funded.balance(CAROL.address).available == 0
    assert funded.is_flagged(ALICE.address)


def test_overspend_is_rejected_and_still_uses_its_sequence_number(net, funded):
    too_much = net.transfer(ALICE, BOB, THOUSAND, T0 + 1)
    fine = net.transfer(ALICE, BOB, neuro(1), T0 + 2)
    submit_all(funded, [too_much, fine])
    assert funded.record_status(too_much.record_id) == ("rejected", "insufficient available balance for amount plus fee")
    assert funded.record_status(fine.record_id)[0] == "applied"


def test_sequence_gap_waits_until_the_missing_record_arrives(net, funded):
    first = net.transfer(ALICE, BOB, neuro(1), T0 + 1)
    second = net.transfer(ALICE, BOB, neuro(2), T0 + 2)
    submit_all(funded, [second])
    assert funded.record_status(second.record_id)[0] == "waiting"
    assert funded.next_seq(ALICE.address) == 3
    submit_all(funded, [first])
    assert funded.balance(BOB.address).available == neuro(3)


def test_unstake_is_pending_for_one_challenge_window(net, funded):
    submit_all(funded, [net.stake(ALICE, neuro(100), T0 + 1),
                        net.signed(ALICE, "unstake", {"amount": neuro(40)}, T0 + 2)])
    assert funded.balance(ALICE.address) == Balance(THOUSAND - neuro(100), neuro(60), neuro(40))
    later = net.config.challenge_window_ms + 10
    submit_all(funded, [net.transfer(BOB, ALICE, 1, T0 + later, fee=0)])  # only moves the clock
    assert funded.balance(ALICE.address) == Balance(THOUSAND - neuro(60), neuro(60), 0)


def test_records_from_another_network_or_the_future_are_refused_at_the_door(net, funded):
    other = Devnet(config=EconomicsConfig.devnet(network_id="elsewhere"))
    foreign = other.transfer(ALICE, BOB, 1, T0 + 1, seq=1)
    assert "network" in funded.submit(foreign.to_bytes(), T0).reason
    future = net.transfer(ALICE, BOB, 1, T0 + net.config.max_clock_skew_ms + 1000)
    assert "future" in funded.submit(future.to_bytes(), T0).reason


def test_genesis_from_another_key_is_refused(net, funded):
    impostor = Devnet(genesis=CAROL, config=net.config)
    result = funded.submit(impostor.genesis_record({CAROL.address: THOUSAND}).to_bytes(), T0)
    assert result.status == "rejected" and "genesis" in result.reason


def test_records_since_pages_through_everything_for_gossip(net, funded):
    submit_all(funded, [net.transfer(ALICE, BOB, 1, T0 + i) for i in range(1, 6)])
    page, cursor = funded.records_since(0, limit=4)
    rest, end = funded.records_since(cursor, limit=4)
    assert len(page) == 4 and len(rest) == 2
    assert funded.records_since(end) == ([], end)
    ids = {Record.from_bytes(raw).record_id for raw in page + rest}
    assert funded.have(ids | {"0" * 64}) == ids


def test_state_survives_restart_and_verify_passes(net, funded, tmp_path):
    submit_all(funded, [net.transfer(ALICE, BOB, neuro(5), T0 + 1)])
    before = funded.state_hash()
    funded.close()
    reopened = Ledger(tmp_path, net.config)
    assert reopened.state_hash() == before
    report = reopened.verify()
    assert report.ok and report.records_checked == 2
    reopened.close()


def test_verify_detects_an_edited_balance_and_a_tampered_record(net, funded, tmp_path):
    submit_all(funded, [net.transfer(ALICE, BOB, neuro(5), T0 + 1)])
    funded.state_hash()
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("UPDATE balances SET available = available + 1000000 WHERE address = ?", (BOB.address,))
    raw = db.execute("SELECT raw FROM records WHERE kind = 'transfer'").fetchone()[0]
    db.execute("UPDATE records SET raw = ? WHERE kind = 'transfer'", (raw.replace(b'"memo":""', b'"memo":"x"'),))
    db.commit()
    db.close()
    report = Ledger(tmp_path, net.config).verify()
    assert not report.ok
    assert any("signature" in reason for _, reason in report.bad_records)


def test_database_from_a_newer_release_is_refused(net, tmp_path):
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(LedgerError, match="newer"):
        net.ledger(tmp_path)


def test_ledger_uses_wal_mode(funded):
    mode = funded._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_verify_detects_a_balance_edited_behind_the_ledgers_back(net, funded, tmp_path):
    submit_all(funded, [net.transfer(ALICE, BOB, neuro(5), T0 + 1)])
    funded.close()
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("UPDATE balances SET available = available + 1000000 WHERE address = ?", (BOB.address,))
    db.commit()
    db.close()
    reopened = Ledger(tmp_path, net.config)
    assert reopened.balance(BOB.address).available == neuro(5)  # recomputed, never read from the table
    report = reopened.verify()
    assert not report.ok and report.balance_mismatches == [BOB.address]


def test_forged_signature_is_rejected_unless_the_genuine_record_is_already_held(net, funded):
    import json

    from app.node.economics.records import canonical_json

    genuine = net.transfer(ALICE, BOB, neuro(1), T0 + 1)
    doc = json.loads(genuine.to_bytes())
    doc["sig"] = "11" * 64
    forged = canonical_json(doc)
    rejected = funded.submit(forged, T0 + 1)
    assert rejected.status == "rejected" and "signature" in rejected.reason
    assert funded.submit(genuine.to_bytes(), T0 + 1).accepted
    assert funded.submit(forged, T0 + 1).status == "duplicate"  # same content: nothing new to store
    assert funded.balance(BOB.address).available == neuro(1)
