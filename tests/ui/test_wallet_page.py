"""Wallet page on the real ledger: balances, send with validation and password, stake, CSV, backup."""

from __future__ import annotations

import csv

from app.node.economics.constants import neuro
from app.ui.estimate import EarningsEstimator
from app.wallet.keys import PrivateKey
from tests.ui.devnet_runtime import PASSWORD, fast_keystore
from tests.ui.helpers import runtime, wait_training

RECIPIENT = PrivateKey((777).to_bytes(32, "big")).address


def open_wallet(qtbot, ledger_gui):  # noqa: ANN001, ANN201
    wait_training(qtbot, ledger_gui)
    page = ledger_gui.window.wallet
    qtbot.waitUntil(lambda: page.available_units == neuro(800), timeout=5_000)
    return page


def test_balances_show_available_staked_and_an_explanation(qtbot, ledger_gui) -> None:  # noqa: ANN001
    page = open_wallet(qtbot, ledger_gui)
    assert page.available_label.text() == "800.0000 NEURO"
    assert page.staked_label.text() == "200.0000 NEURO"
    assert page.address_label.text().startswith("ns1")
    qtbot.waitUntil(lambda: page.history.table.rowCount() >= 2, timeout=5_000)


def test_send_refuses_bad_address_and_amount_then_wrong_password_is_reported(qtbot, ledger_gui) -> None:  # noqa: ANN001
    page = open_wallet(qtbot, ledger_gui)
    dialog = page.open_send()
    dialog.address.setText("ns1deadbeef")
    dialog.amount.setText("5")
    dialog.password.setText("x")
    assert not dialog.try_accept()
    assert "address is not valid" in dialog.error.text()
    dialog.address.setText(RECIPIENT)
    dialog.amount.setText("-3")
    assert not dialog.try_accept() and "more than 0" in dialog.error.text()
    dialog.amount.setText("5000")
    assert not dialog.try_accept() and "Not enough available" in dialog.error.text()
    dialog.amount.setText("5")
    dialog.password.setText("not the password")
    assert dialog.try_accept()
    qtbot.waitUntil(lambda: "Not sent" in page.message.text(), timeout=5_000)
    assert "password" in page.message.text().lower()
    assert runtime(ledger_gui).economy.ledger.balance(RECIPIENT).available == 0


def test_send_with_password_moves_value_on_the_ledger(qtbot, ledger_gui) -> None:  # noqa: ANN001
    page = open_wallet(qtbot, ledger_gui)
    dialog = page.open_send()
    dialog.address.setText(RECIPIENT)
    dialog.amount.setText("12.5")
    dialog.password.setText(PASSWORD)
    assert "12.5000" in dialog.total_label.text()
    assert dialog.try_accept()
    qtbot.waitUntil(lambda: page.message.text().startswith("Sent"), timeout=5_000)
    assert runtime(ledger_gui).economy.ledger.balance(RECIPIENT).available == neuro(12.5)
    qtbot.waitUntil(lambda: page.available_units < neuro(800) - neuro(12.5) + 1, timeout=5_000)


def test_stake_then_history_exports_to_csv(qtbot, ledger_gui, tmp_path) -> None:  # noqa: ANN001
    page = open_wallet(qtbot, ledger_gui)
    dialog = page.open_stake("stake")
    dialog.amount.setText("900")
    dialog.password.setText(PASSWORD)
    assert not dialog.try_accept() and "at most" in dialog.error.text()
    dialog.amount.setText("50")
    assert dialog.try_accept()
    qtbot.waitUntil(lambda: page.staked_units == neuro(250), timeout=5_000)
    qtbot.waitUntil(lambda: page.history.table.rowCount() >= 3, timeout=5_000)
    page.history.kind_filter.setCurrentText("stake")
    out = tmp_path / "history.csv"
    page.export_csv(out)
    rows = list(csv.reader(out.open()))
    assert rows[0][0] == "Time" and len(rows) >= 3
    assert all(r[1] == "stake" for r in rows[1:])
    page.export_csv(tmp_path / "missing-dir" / "x.csv")
    assert "Could not write" in page.message.text()


def test_backup_export_writes_a_file_that_restores_the_same_key(qtbot, ledger_gui, tmp_path) -> None:  # noqa: ANN001
    page = open_wallet(qtbot, ledger_gui)
    target = tmp_path / "wallet.backup"
    page.export_backup(target, "wrong password!")
    qtbot.waitUntil(lambda: "not written" in page.message.text(), timeout=10_000)
    page.export_backup(target, PASSWORD)
    qtbot.waitUntil(lambda: "Backup written" in page.message.text(), timeout=10_000)
    restored = fast_keystore(tmp_path / "other").restore_backup(target, PASSWORD)
    assert restored.address == page.address_label.text()


def test_earnings_estimate_waits_for_a_few_minutes_of_work() -> None:
    est = EarningsEstimator(min_observed_s=180)
    assert est.per_day_units(now=0) is None
    est.start(now=1000)
    est.add(500, now=1100)
    assert est.per_day_units(now=1100) is None
    assert est.seconds_until_ready(now=1100) == 80
    est.add(1300, now=1360)
    assert est.per_day_units(now=1360) == int(1800 / 360 * 86400)
