import argparse
import json
import sqlite3

from app.node.economics.constants import neuro
from app.wallet import ledger_cli as cli

from .helpers import ALICE, BOB, T0, Devnet, submit_all


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(list(argv)))


def _make_ledger(tmp_path) -> Devnet:
    net = Devnet()
    (tmp_path / "config.toml").write_text(
        f'[economics]\ngenesis_public_key = "{net.genesis.public_key.data.hex()}"\n')
    ledger = net.ledger(tmp_path)
    submit_all(ledger, [net.genesis_record({ALICE.address: neuro(10)}), net.transfer(ALICE, BOB, neuro(1), T0 + 1)])
    ledger.close()
    return net


def test_verify_and_balance_commands(tmp_path, capsys):
    _make_ledger(tmp_path)
    assert _run("--data-dir", str(tmp_path), "--devnet", "verify") == 0
    assert "OK" in capsys.readouterr().out
    assert _run("--data-dir", str(tmp_path), "--devnet", "--json", "balance", BOB.address) == 0
    assert json.loads(capsys.readouterr().out)["available"] == neuro(1)
    assert _run("--data-dir", str(tmp_path), "--devnet", "history", ALICE.address) == 0
    assert "send" in capsys.readouterr().out


def test_verify_fails_with_status_1_on_a_tampered_database(tmp_path, capsys):
    _make_ledger(tmp_path)
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("UPDATE balances SET available = 1 WHERE address = ?", (BOB.address,))
    db.commit()
    db.close()
    assert _run("--data-dir", str(tmp_path), "--devnet", "verify") == 1
    assert BOB.address in capsys.readouterr().out


def test_missing_ledger_and_bad_address_exit_with_status_2(tmp_path, capsys):
    assert _run("--data-dir", str(tmp_path / "none"), "verify") == 2
    _make_ledger(tmp_path)
    assert _run("--data-dir", str(tmp_path), "--devnet", "balance", "ns1nope") == 2
    assert "error" in capsys.readouterr().err


def test_verify_fails_on_double_spend_conflicts_and_names_the_flagged_account(tmp_path, capsys):
    """Two processes on one wallet reused sequence numbers: valid signatures, but not OK."""
    from .helpers import CAROL

    net = _make_ledger(tmp_path)
    ledger = net.ledger(tmp_path)
    pay_bob = net.transfer(ALICE, BOB, neuro(1), T0 + 2, seq=2)
    pay_carol = net.transfer(ALICE, CAROL, neuro(1), T0 + 3, seq=2)
    submit_all(ledger, [pay_bob, pay_carol])
    ledger.close()
    assert _run("--data-dir", str(tmp_path), "--devnet", "verify") == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "2 double-spend conflicts, 1 flagged accounts" in out
    assert ALICE.address in out and pay_bob.record_id in out and pay_carol.record_id in out
    assert _run("--data-dir", str(tmp_path), "--devnet", "--json", "verify") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["flagged"] == [ALICE.address]
    assert sorted(report["conflicts"]) == sorted([pay_bob.record_id, pay_carol.record_id])
