"""Recovery phrase: the 32-byte secret written as 24 words a volunteer can copy by hand.

New phrases are BIP-39 (the ``mnemonic`` package, English list): 2048 words that differ within
their first four letters, 256 bits of the secret plus an 8-bit checksum. The 256 bits *are* the
key: there is no PBKDF2 seed or BIP-32 derivation step, so the phrase restores this wallet here,
not an address in another wallet app. A word may be typed by its first four letters, as BIP-39
allows.

Wallets made before BIP-39 wrote their phrase in a hand-made list of consonant-vowel words
(``wordlist.txt``, version 1: same bit layout, a different list). ``decode`` still accepts those
phrases, so nothing written down earlier stops working; ``encode`` writes BIP-39 only.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from mnemonic import Mnemonic

from app.wallet.errors import WalletError

WORDS = 24
_FIRST = "bdfghjklmnprstvz"
_VOWELS = "aeio"
_THIRD = "dklmnrst"


class InvalidPhrase(WalletError):
    """The words do not form a valid recovery phrase; the message says which part is wrong."""


@functools.lru_cache(maxsize=1)
def _bip39() -> Mnemonic:
    return Mnemonic("english")


def bip39_wordlist() -> tuple[str, ...]:
    return tuple(_bip39().wordlist)


def expected_words() -> list[str]:
    """The legacy list the rule defines; ``wordlist.txt`` must equal it."""
    return sorted(a + b + c + d for a in _FIRST for b in _VOWELS for c in _THIRD for d in _VOWELS)


@functools.lru_cache(maxsize=1)
def wordlist() -> tuple[str, ...]:
    """The legacy (version 1) word list, checked against its rule so a damaged install cannot
    silently restore wrong keys."""
    words = (Path(__file__).with_name("wordlist.txt")).read_text(encoding="ascii").split()
    if words != expected_words():
        raise WalletError("app/wallet/wordlist.txt is damaged; reinstall NeuroShard Node")
    return tuple(words)


def encode(secret: bytes) -> str:
    """32-byte secret -> 24 BIP-39 words separated by single spaces."""
    if len(secret) != 32:
        raise ValueError("secret must be 32 bytes")
    return str(_bip39().to_mnemonic(secret))


def _bip39_words(parts: list[str]) -> list[str] | None:
    """The full BIP-39 words (a four-letter prefix stands for its word), or None if some part
    is in neither form."""
    words = bip39_wordlist()
    full = set(words)
    by_prefix = {word[:4]: word for word in words}
    out = []
    for part in parts:
        if part in full:
            out.append(part)
            continue
        word = by_prefix.get(part[:4], "") if len(part) >= 4 else ""
        if not word.startswith(part):
            return None
        out.append(word)
    return out


def decode(phrase: str) -> bytes:
    """24 words (BIP-39, or the version-1 list of older wallets) -> the 32-byte secret; refuses
    unknown words, a wrong count and a bad checksum without echoing any word (they are the secret)."""
    parts = phrase.lower().split()
    if len(parts) != WORDS:
        raise InvalidPhrase(f"a recovery phrase has {WORDS} words, got {len(parts)}")
    words = _bip39_words(parts)
    if words is not None:
        secret = _decode_bip39(words)
        if secret is not None:
            return secret
    legacy = set(wordlist())
    if all(part in legacy for part in parts):
        return _decode_legacy(parts)
    if words is not None:
        raise InvalidPhrase("checksum does not match: a word is wrong or two words are swapped")
    raise InvalidPhrase(f"word {_first_unknown(parts)} is not in the word list; check its spelling")


def _first_unknown(parts: list[str]) -> int:
    """Position (from 1) of the first word outside the list most of the words belong to."""
    bip39 = [_bip39_words([part]) is not None for part in parts]
    legacy_list = set(wordlist())
    legacy = [part in legacy_list for part in parts]
    known = legacy if sum(legacy) > sum(bip39) else bip39
    return known.index(False) + 1


def _decode_bip39(words: list[str]) -> bytes | None:
    joined = " ".join(words)
    if not _bip39().check(joined):
        return None
    return bytes(_bip39().to_entropy(joined))


def _decode_legacy(parts: list[str]) -> bytes:
    index = {word: i for i, word in enumerate(wordlist())}
    bits = 0
    for word in parts:
        bits = (bits << 11) | index[word]
    raw = bits.to_bytes(33, "big")
    secret, checksum = raw[:32], raw[32:]
    if hashlib.sha256(secret).digest()[:1] != checksum:
        raise InvalidPhrase("checksum does not match: a word is wrong or two words are swapped")
    return secret
