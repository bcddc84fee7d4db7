"""Recovery phrases are BIP-39, and phrases written by wallets made before BIP-39 still restore."""

from __future__ import annotations

import pytest
from mnemonic import Mnemonic

from app.crypto.keys import PrivateKey
from app.wallet import phrase
from app.wallet.keystore import Keystore
from tests.wallet.conftest import FAST_N

# Written by the version-1 encoder (hand-made consonant-vowel list) for this secret, as an older
# wallet showed it to its volunteer.
LEGACY_SECRET = bytes.fromhex("7f" * 31 + "01")
LEGACY_PHRASE = ("loso zito toti zoro zeto rote zomo voto loso zito toti zoro zeto rote zomo voto "
                 "loso zito toti zoro zeto rote zoda foma")


def test_new_phrases_are_bip39_words_with_a_valid_checksum() -> None:
    secret = PrivateKey.generate().to_bytes()
    words = phrase.encode(secret)
    english = Mnemonic("english")
    assert len(words.split()) == 24
    assert set(words.split()) <= set(english.wordlist)
    assert english.check(words)
    assert phrase.decode(words) == secret


def test_a_phrase_of_an_older_wallet_still_restores_that_wallet(tmp_path) -> None:
    assert phrase.decode(LEGACY_PHRASE) == LEGACY_SECRET
    keystore = Keystore(tmp_path, use_keyring=False, scrypt_n=FAST_N)
    key = keystore.import_phrase(LEGACY_PHRASE.upper(), "new-pass")
    assert key.address == PrivateKey(LEGACY_SECRET).address
    # the wallet now shows its phrase in BIP-39, which restores the same key
    assert phrase.decode(keystore.recovery_phrase("new-pass")) == LEGACY_SECRET


def test_one_wrong_letter_in_an_older_phrase_is_caught() -> None:
    words = LEGACY_PHRASE.split()
    words[6] = "zoma"  # one vowel away from "zomo", a valid version-1 word
    with pytest.raises(phrase.InvalidPhrase, match="checksum"):
        phrase.decode(" ".join(words))


def test_bip39_words_may_be_typed_by_their_first_four_letters() -> None:
    secret = bytes(range(1, 33))
    words = phrase.encode(secret).split()
    short = " ".join(word[:4] for word in words)
    assert phrase.decode(short) == secret


def test_an_unknown_word_is_named_by_position_not_by_its_text() -> None:
    words = phrase.encode(bytes(range(1, 33))).split()
    words[9] = "xylophonic"
    with pytest.raises(phrase.InvalidPhrase, match="word 10 ") as caught:
        phrase.decode(" ".join(words))
    assert "xylophonic" not in str(caught.value)
    legacy = LEGACY_PHRASE.split()
    legacy[2] = "qqqq"
    with pytest.raises(phrase.InvalidPhrase, match="word 3 "):
        phrase.decode(" ".join(legacy))


def test_a_wrong_word_count_is_refused() -> None:
    with pytest.raises(phrase.InvalidPhrase, match="24 words, got 12"):
        phrase.decode(" ".join(phrase.encode(bytes(range(1, 33))).split()[:12]))
