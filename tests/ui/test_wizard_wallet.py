"""The wizard's wallet pages: new wallets get a BIP-39 phrase, older phrases still import."""

from __future__ import annotations

from mnemonic import Mnemonic

from app.crypto.keys import PrivateKey
from app.ui.app import GuiApp
from app.ui.wizard.state import PageId
from tests.ui.funded_ledger import PASSWORD, fast_keystore
from tests.ui.test_wizard import next_page
from tests.wallet.test_phrase import LEGACY_PHRASE, LEGACY_SECRET


def test_a_new_wallet_shows_a_standard_bip39_phrase(qtbot, config) -> None:  # noqa: ANN001
    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    wizard = app.wizard
    next_page(qtbot, wizard, PageId.WALLET)
    wizard.wallet.password.setText(PASSWORD)
    wizard.wallet.confirm.setText(PASSWORD)
    next_page(qtbot, wizard, PageId.PHRASE)
    words = " ".join(wizard.phrase.words())
    assert Mnemonic("english").check(words)
    assert "BIP-39" in wizard.phrase.subTitle()
    app.dispose()


def test_the_phrase_of_an_older_wallet_restores_it_in_the_wizard(qtbot, config) -> None:  # noqa: ANN001
    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    wizard = app.wizard
    next_page(qtbot, wizard, PageId.WALLET)
    page = wizard.wallet
    page.import_radio.setChecked(True)
    page.password.setText(PASSWORD)
    page.confirm.setText(PASSWORD)
    page.phrase_edit.setPlainText("  " + LEGACY_PHRASE.replace(" ", "\n", 3) + " ")
    next_page(qtbot, wizard, PageId.HARDWARE)
    assert wizard.state.address == PrivateKey(LEGACY_SECRET).address
    assert fast_keystore(config.data_dir).unlock(PASSWORD).address == wizard.state.address
    app.dispose()
