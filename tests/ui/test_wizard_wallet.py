"""The wizard's wallet pages: new wallets get a BIP-39 phrase, older phrases still import."""

from __future__ import annotations

from mnemonic import Mnemonic

from app.crypto.keys import PrivateKey
from app.node import identity
from app.ui.app import GuiApp
from app.ui.wizard.state import PageId
from app.wallet.keystore import Keystore
from tests.ui.funded_ledger import PASSWORD, fast_keystore
from tests.ui.test_wizard import next_page
from tests.wallet.conftest import MemoryKeyring
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


def test_without_a_keyring_the_wizard_says_what_login_start_needs_and_offers_no_password(qtbot, config) -> None:  # noqa: ANN001
    app = GuiApp(config, keystore_factory=fast_keystore)  # a file keystore: no OS keyring here
    app.launch()
    wizard = app.wizard
    next_page(qtbot, wizard, PageId.WALLET)
    page = wizard.wallet
    qtbot.waitUntil(lambda: page.keyring_usable is not None, timeout=10_000)
    assert page.keyring_usable is False
    assert "no password store" in page.keyring_note.text() and "log in" in page.keyring_note.text()
    assert page.no_password.isVisibleTo(page)
    page.no_password.setChecked(True)
    assert page.problem() is None  # no password to type
    next_page(qtbot, wizard, PageId.PHRASE)
    wizard.phrase.written.setChecked(True)
    next_page(qtbot, wizard, PageId.CONFIRM)
    assert not wizard.confirm.backup_button.isEnabled() and "recovery phrase" in wizard.confirm.backup_status.text()
    address = wizard.state.address
    app.dispose()
    # At the next login nobody types anything: the node's own unlock finds the wallet.
    identity.forget_password(config.data_dir)
    assert identity.load_node_key(config, fast_keystore(config.data_dir)).address == address


def test_with_a_keyring_the_wizard_says_the_node_starts_by_itself(qtbot, config) -> None:  # noqa: ANN001
    ring = MemoryKeyring()

    def keyring_keystore(data_dir):  # noqa: ANN001, ANN202
        return Keystore(data_dir, service_name="neuroshard-test", backend=ring, scrypt_n=2**14)

    app = GuiApp(config, keystore_factory=keyring_keystore)
    app.launch()
    wizard = app.wizard
    next_page(qtbot, wizard, PageId.WALLET)
    page = wizard.wallet
    qtbot.waitUntil(lambda: page.keyring_usable is not None, timeout=10_000)
    assert page.keyring_usable is True and "start by itself" in page.keyring_note.text()
    assert not page.no_password.isVisibleTo(page)
    app.dispose()
