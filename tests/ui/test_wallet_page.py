"""Wallet page on the node's real ledger (funded at genesis): balances, send with validation and
password, stake, CSV, backup. The tests share one node (module fixture), which also earns rewards
while they run, so they compare the ledger before and after rather than expect fixed balances."""

from __future__ import annotations

import csv

from app.crypto.keys import PrivateKey
from app.node.economics.constants import neuro
from app.ui.estimate import EarningsEstimator
from app.ui.format import format_neuro
from app.ui.widgets.history_table import PROOF_AMOUNT
from tests.ui.funded_ledger import GRANT_UNITS, PASSWORD, STAKE_UNITS, fast_keystore
from tests.ui.helpers import economy, wait_training

RECIPIENT = PrivateKey((777).to_bytes(32, "big")).address


def open_wallet(qtbot, shared_gui):  # noqa: ANN001, ANN201
    wait_training(qtbot, shared_gui)
    page = shared_gui.window.wallet
    qtbot.waitUntil(lambda: page.available_units > 0, timeout=10_000)
    return page


def balance(shared_gui):  # noqa: ANN001, ANN201
    return economy(shared_gui).ledger.balance(shared_gui.window.wallet.address_label.text())


def test_balances_show_available_staked_and_an_explanation(qtbot, shared_gui) -> None:  # noqa: ANN001
    page = open_wallet(qtbot, shared_gui)
    assert page.address_label.text().startswith("ns1")
    assert page.address_label.text() == economy(shared_gui).session.wallet.address
    # The page follows the ledger (rewards keep arriving, so compare at a moment both agree).
    qtbot.waitUntil(lambda: (page.available_units, page.staked_units)
                    == (balance(shared_gui).available, balance(shared_gui).staked), timeout=10_000)
    assert page.staked_units >= STAKE_UNITS and page.available_units > 0
    assert page.available_units + page.staked_units >= GRANT_UNITS - neuro(200)  # grant, less what tests spent
    assert page.available_label.text() == format_neuro(page.available_units)
    assert page.staked_label.text() == format_neuro(page.staked_units)
    qtbot.waitUntil(lambda: page.history.table.rowCount() >= 2, timeout=5_000)  # genesis grant and stake


def test_send_refuses_bad_address_and_amount_then_wrong_password_is_reported(qtbot, shared_gui) -> None:  # noqa: ANN001
    page = open_wallet(qtbot, shared_gui)
    received = economy(shared_gui).ledger.balance(RECIPIENT).available
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
    assert economy(shared_gui).ledger.balance(RECIPIENT).available == received


def test_send_with_password_moves_value_on_the_ledger(qtbot, shared_gui) -> None:  # noqa: ANN001
    page = open_wallet(qtbot, shared_gui)
    received = economy(shared_gui).ledger.balance(RECIPIENT).available
    dialog = page.open_send()
    dialog.address.setText(RECIPIENT)
    dialog.amount.setText("12.5")
    dialog.password.setText(PASSWORD)
    assert "12.5000" in dialog.total_label.text()
    assert dialog.try_accept()
    qtbot.waitUntil(lambda: page.message.text().startswith("Sent"), timeout=5_000)
    assert economy(shared_gui).ledger.balance(RECIPIENT).available == received + neuro(12.5)
    history = economy(shared_gui).query("history")
    assert any(row["kind"] == "send" and row["amount_units"] < -neuro(12.5) + 1 for row in history)


def test_stake_then_history_exports_to_csv(qtbot, shared_gui, tmp_path) -> None:  # noqa: ANN001
    page = open_wallet(qtbot, shared_gui)
    staked = balance(shared_gui).staked
    dialog = page.open_stake("stake")
    dialog.amount.setText(str(page.available_units // neuro(1) + 1))
    dialog.password.setText(PASSWORD)
    assert not dialog.try_accept() and "at most" in dialog.error.text()
    dialog.amount.setText("50")
    assert dialog.try_accept()
    qtbot.waitUntil(lambda: balance(shared_gui).staked == staked + neuro(50), timeout=5_000)
    qtbot.waitUntil(lambda: page.staked_units == staked + neuro(50), timeout=5_000)
    # the genesis stake and this one (the table refreshes from the node a moment after the stake)
    qtbot.waitUntil(lambda: sum(r.kind == "stake" for r in page.history.rows) >= 2, timeout=10_000)
    page.history.kind_filter.setCurrentText("stake")
    out = tmp_path / "history.csv"
    page.export_csv(out)
    rows = list(csv.reader(out.open()))
    assert rows[0][0] == "Time" and len(rows) >= 3
    assert all(r[1] == "stake" for r in rows[1:])
    page.export_csv(tmp_path / "missing-dir" / "x.csv")
    assert "Could not write" in page.message.text()


def test_backup_export_writes_a_file_that_restores_the_same_key(qtbot, shared_gui, tmp_path) -> None:  # noqa: ANN001
    page = open_wallet(qtbot, shared_gui)
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


def test_a_proof_row_says_its_reward_comes_as_its_own_row(qtbot, shared_gui) -> None:  # noqa: ANN001
    wait_training(qtbot, shared_gui)
    page = shared_gui.window.wallet
    # devnet epochs are short: the node's own proofs reach its ledger history within seconds
    def has_proof() -> bool:
        page.refresh()
        return any(r.kind == "proof" for r in page.history.rows)

    qtbot.waitUntil(has_proof, timeout=60_000)
    page.history.search.clear()
    page.history.kind_filter.setCurrentText("proof")  # an earlier test of this module left "stake" chosen
    index = next(i for i, r in enumerate(page.history.visible_rows()) if r.kind == "proof")
    assert page.history.visible_rows()[index].amount_units == 0  # a proof moves no NEURO itself
    assert page.history.table.item(index, 2).text() == PROOF_AMOUNT
