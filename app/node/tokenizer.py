"""NeuroLLM's byte-level BPE tokenizer, whose merges are decided by governance votes.

Layout (seed 001, DESIGN.md §3): ids 0..255 are the raw byte values, 256..265 the special
tokens, and every accepted merge gets the next id, in the order merges were applied. The
genesis vocabulary is therefore 266 tokens, and two nodes that applied the same merge list
give every text the same ids.

The BPE itself runs in the ``tokenizers`` library (Rust). We feed it text that we map to the
GPT-2 byte-to-unicode alphabet ourselves, after splitting words with a regular expression
over BYTES: that way arbitrary, even invalid UTF-8, input is tokenised by the same pipeline as
text, and user text can never produce a special token (``"<eos>"`` typed by a user is five
byte tokens, not an end-of-sequence).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import BPE

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>", "<sep>", "<mask>",
                  "<reserved0>", "<reserved1>", "<reserved2>", "<reserved3>")
FIRST_SPECIAL = 256
FIRST_MERGE = FIRST_SPECIAL + len(SPECIAL_TOKENS)
HASH_DOMAIN = b"neuroshard-bpe-merges/1\n"

_PRETOKEN = re.compile(
    rb" ?[A-Za-z\x80-\xff]+"  # a word, with its leading space; UTF-8 letters stay together
    rb"| ?[0-9]{1,3}"  # numbers in groups of up to three digits (as GPT-4's splitter)
    rb"| ?[^\sA-Za-z0-9\x80-\xff]+"  # punctuation runs
    rb"|\s+(?!\S)|\s+"  # whitespace, leaving one space to lead the next word
)


class TokenizerError(ValueError):
    """Invalid merges, ids or tokenizer files."""


@cache
def _byte_alphabet() -> tuple[str, ...]:
    """GPT-2's bijection of the 256 bytes onto printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


@cache
def _translation() -> dict[int, str]:
    return dict(enumerate(_byte_alphabet()))


class NeuroTokenizer:
    """Immutable: ``apply_merges`` returns a new tokenizer, so a running encoder never changes
    its ids under a training step while a vote is being implemented."""

    def __init__(self, merges: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self._token_bytes: list[bytes] = [bytes([b]) for b in range(256)] + [b""] * len(SPECIAL_TOKENS)
        self._ids: dict[bytes, int] = {bytes([b]): b for b in range(256)}
        self._merges: list[tuple[bytes, bytes]] = []
        for pair in merges:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TokenizerError(f"a merge is a pair (left, right) of bytes, got {pair!r}")
            self._add_merge(pair[0], pair[1])
        self._tokenizer = self._build()

    @classmethod
    def genesis(cls) -> NeuroTokenizer:
        return cls()

    def _add_merge(self, left: bytes, right: bytes) -> None:
        if not (isinstance(left, bytes) and isinstance(right, bytes)):
            raise TokenizerError(f"a merge is a pair of bytes, got {left!r}, {right!r}")
        for part in (left, right):
            if part not in self._ids:
                raise TokenizerError(f"merge part {part!r} is not a token of this vocabulary")
        joined = left + right
        if joined in self._ids:
            raise TokenizerError(f"merge {left!r} + {right!r} makes {joined!r}, which is already token "
                                 f"{self._ids[joined]}")
        self._ids[joined] = len(self._token_bytes)
        self._token_bytes.append(joined)
        self._merges.append((left, right))

    def _build(self) -> Tokenizer:
        alphabet = _byte_alphabet()

        def text(token: bytes) -> str:
            return "".join(alphabet[b] for b in token)

        vocab = {text(t): i for t, i in self._ids.items()}
        # Placeholders keep the id space dense; their characters lie outside the byte alphabet,
        # so no input can ever produce them.
        vocab.update({f"\u2400{name}": FIRST_SPECIAL + k for k, name in enumerate(SPECIAL_TOKENS)})
        model = BPE(vocab=vocab, merges=[(text(a), text(b)) for a, b in self._merges])
        return Tokenizer(model)

    # -- vocabulary -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._token_bytes)

    @property
    def merges(self) -> list[tuple[bytes, bytes]]:
        return list(self._merges)

    @property
    def merge_ids(self) -> list[tuple[int, int]]:
        """Each merge as the ids of its two parts; merge ``k`` makes id ``FIRST_MERGE + k``.

        This is all a token stream needs to follow a vocabulary change: replacing the pairs in
        this order (within pre-tokens, see ``pretoken_starts``) gives the ids ``encode`` gives."""
        return [(self._ids[left], self._ids[right]) for left, right in self._merges]

    @property
    def version(self) -> str:
        """Short tag naming this vocabulary: its size and the start of its content hash."""
        return f"{self.vocab_size}-{self.content_hash[:16]}"

    @property
    def pad_id(self) -> int:
        return self.special_id("<pad>")

    @property
    def bos_id(self) -> int:
        return self.special_id("<bos>")

    @property
    def eos_id(self) -> int:
        return self.special_id("<eos>")

    @staticmethod
    def special_id(name: str) -> int:
        try:
            return FIRST_SPECIAL + SPECIAL_TOKENS.index(name)
        except ValueError:
            raise TokenizerError(f"unknown special token {name!r}; known: {SPECIAL_TOKENS}") from None

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (empty for special tokens), e.g. to show voters."""
        self._check_id(token_id)
        return self._token_bytes[token_id]

    def token_label(self, token_id: int) -> str:
        """Human-readable form: special tokens by name, others as their (escaped) text."""
        self._check_id(token_id)
        if FIRST_SPECIAL <= token_id < FIRST_MERGE:
            return SPECIAL_TOKENS[token_id - FIRST_SPECIAL]
        return self._token_bytes[token_id].decode("utf-8", errors="backslashreplace")

    def _check_id(self, token_id: int) -> None:
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < self.vocab_size:
            raise TokenizerError(f"token id {token_id!r} is outside the vocabulary 0..{self.vocab_size - 1}")

    @property
    def content_hash(self) -> str:
        """SHA-256 over the ordered merge list: equal hashes mean equal ids on every node."""
        h = hashlib.sha256(HASH_DOMAIN)
        for left, right in self._merges:
            for part in (left, right):
                h.update(len(part).to_bytes(4, "big"))
                h.update(part)
        return h.hexdigest()

    # -- encoding ---------------------------------------------------------------------------------
    def encode(self, text: str | bytes) -> list[int]:
        """Token ids of ``text`` (str as UTF-8, or raw bytes); never emits special tokens."""
        pieces = _pieces(text)
        if not pieces:
            return []
        return self._tokenizer.encode(pieces, is_pretokenized=True, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str | bytes]) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch([_pieces(t) or [""] for t in texts],
                                                 is_pretokenized=True, add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of ``ids``; special tokens contribute nothing."""
        out = []
        for i in ids:
            self._check_id(i)
            out.append(self._token_bytes[i])
        return b"".join(out)

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- growth by governance ------------------------------------------------------------------------
    def apply_merges(self, merges: Sequence[tuple[bytes, bytes]]) -> NeuroTokenizer:
        """A new tokenizer with ``merges`` appended (ids in that order); raises TokenizerError,
        leaving this tokenizer unchanged, when a merge names an unknown part or a known token."""
        return NeuroTokenizer([*self._merges, *merges])

    def propose_merges(self, corpus: Iterable[str | bytes], k: int) -> list[tuple[bytes, bytes]]:
        """The ``k`` merges that would save the most tokens on ``corpus``, greedily, as BPE
        training does. Ties go to the lexicographically smallest pair, so every node that
        runs this on the same corpus proposes the same list."""
        if k < 0:
            raise TokenizerError(f"k must be >= 0, got {k}")
        words: Counter[tuple[int, ...]] = Counter()
        for text in corpus:
            for piece in _pieces(text):
                words[tuple(self._tokenizer.encode([piece], is_pretokenized=True).ids)] += 1
        return _greedy_merges(words, k, list(self._token_bytes), dict(self._ids))

    # -- files ----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        data = {"format": "neuroshard-tokenizer/1", "content_hash": self.content_hash,
                "merges": [[a.hex(), b.hex()] for a, b in self._merges]}
        Path(path).write_text(json.dumps(data, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> NeuroTokenizer:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("format") != "neuroshard-tokenizer/1":
                raise TokenizerError(f"{path} is not a neuroshard tokenizer file")
            tok = cls([(bytes.fromhex(a), bytes.fromhex(b)) for a, b in data["merges"]])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TokenizerError(f"cannot load tokenizer from {path}: {exc}") from exc
        if tok.content_hash != data.get("content_hash"):
            raise TokenizerError(f"{path}: merges do not match the recorded content hash")
        return tok


def pretoken_starts(raw: bytes) -> list[int]:
    """Byte offsets where the pre-tokens of ``raw`` begin: BPE never merges across them."""
    return [m.start() for m in _PRETOKEN.finditer(raw)]


def _pieces(text: str | bytes) -> list[str]:
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    mapped = raw.decode("latin-1").translate(_translation())
    return [mapped[m.start():m.end()] for m in _PRETOKEN.finditer(raw)]


def _greedy_merges(words: Counter[tuple[int, ...]], k: int, token_bytes: list[bytes],
                   ids: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    chosen: list[tuple[bytes, bytes]] = []
    while len(chosen) < k:
        pairs: Counter[tuple[int, int]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += count
        candidates = [(n, p) for p, n in pairs.items()
                      if n >= 2 and token_bytes[p[0]] + token_bytes[p[1]] not in ids]
        if not candidates:
            break
        best = max(n for n, _ in candidates)
        left, right = min((token_bytes[a], token_bytes[b]) for n, (a, b) in candidates if n == best)
        new_id = len(token_bytes)
        token_bytes.append(left + right)
        ids[left + right] = new_id
        chosen.append((left, right))
        words = _merge_in_words(words, ids[left], ids[right], new_id)
    return chosen


def _merge_in_words(words: Counter[tuple[int, ...]], a: int, b: int, new: int) -> Counter[tuple[int, ...]]:
    merged: Counter[tuple[int, ...]] = Counter()
    for word, count in words.items():
        out, i = [], 0
        while i < len(word):
            if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                out.append(new)
                i += 2
            else:
                out.append(word[i])
                i += 1
        merged[tuple(out)] += count
    return merged
