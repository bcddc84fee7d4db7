"""Recovery phrase: the 32-byte secret written as 24 short words a volunteer can copy by hand.

Encoding (version 1): secret (256 bits) followed by the first byte of SHA-256(secret) (8 bits)
gives 264 bits = 24 groups of 11 bits, big-endian; each group indexes ``wordlist.txt``. The same
layout as BIP-39 for 256-bit entropy, but the phrase *is* the key (no PBKDF2 seed step), and the
word list is our own: 2048 pronounceable four-letter words generated from one rule, consonant
(16) + vowel (4) + consonant (8) + vowel (4), sorted. No two words share a prefix of four letters
(they are four letters), none is a real-word lookalike that spelling correction would change, and
the rule makes the list reproducible and licence-clean. ``wordlist.txt`` is checked against the
rule when loaded so a damaged install cannot silently produce phrases that restore wrong keys.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from app.wallet.errors import WalletError

WORDS = 24
_FIRST = "bdfghjklmnprstvz"
_VOWELS = "aeio"
_THIRD = "dklmnrst"


class InvalidPhrase(WalletError):
    """The words do not form a valid recovery phrase; the message says which part is wrong."""


def expected_words() -> list[str]:
    """The list the rule defines; ``wordlist.txt`` must equal it."""
    return sorted(a + b + c + d for a in _FIRST for b in _VOWELS for c in _THIRD for d in _VOWELS)


@functools.lru_cache(maxsize=1)
def wordlist() -> tuple[str, ...]:
    words = (Path(__file__).with_name("wordlist.txt")).read_text(encoding="ascii").split()
    if words != expected_words():
        raise WalletError("app/wallet/wordlist.txt is damaged; reinstall NeuroShard Node")
    return tuple(words)


def encode(secret: bytes) -> str:
    """32-byte secret -> 24 words separated by single spaces."""
    if len(secret) != 32:
        raise ValueError("secret must be 32 bytes")
    bits = int.from_bytes(secret + hashlib.sha256(secret).digest()[:1], "big")
    words = wordlist()
    indexes = [(bits >> (11 * (WORDS - 1 - i))) & 0x7FF for i in range(WORDS)]
    return " ".join(words[i] for i in indexes)


def decode(phrase: str) -> bytes:
    """24 words -> 32-byte secret; refuses unknown words, wrong length and a bad checksum."""
    parts = phrase.lower().split()
    if len(parts) != WORDS:
        raise InvalidPhrase(f"a recovery phrase has {WORDS} words, got {len(parts)}")
    index = {word: i for i, word in enumerate(wordlist())}
    bits = 0
    for position, word in enumerate(parts, start=1):
        if word not in index:
            # the word itself stays out of the message: it is part of the secret
            raise InvalidPhrase(f"word {position} is not in the word list; check its spelling")
        bits = (bits << 11) | index[word]
    raw = bits.to_bytes(33, "big")
    secret, checksum = raw[:32], raw[32:]
    if hashlib.sha256(secret).digest()[:1] != checksum:
        raise InvalidPhrase("checksum does not match: a word is wrong or two words are swapped")
    return secret
