"""Vocabulary merges in a volunteer's words: ``"th" + "e" -> "the"``, with example words.

The ledger stores each side of a merge as its token bytes in lowercase hex (tokens need not be
valid UTF-8; app/node/economics/records.py), so strings here are hex; token ids (ints) resolve
through the genesis tokenizer, imported lazily (it loads ``tokenizers``, not torch). Whitespace
is made visible because a merge of " " and "the" differs from "the" alone.
"""

from __future__ import annotations

import re
from typing import Any

from app.node.values import genesis_token_bytes

# A few sentences of plain English to find example words for a merge when the node sends none.
SAMPLE_TEXT = (
    "the quick brown fox jumps over the lazy dog while the other animals are watching. "
    "there is nothing in the world that learning cannot change; information wants to be shared. "
    "volunteers train one shared language model together, and everyone earns for the work they prove. "
    "tokens become words, words become sentences, and sentences become stories worth reading."
)


def piece_text(piece: Any) -> str:
    """A merge side as text: strings as they are, token ids through the genesis tokenizer."""
    if isinstance(piece, bool):
        raise ValueError(f"{piece!r} is not a token")
    if isinstance(piece, int):
        return genesis_token_bytes(piece).decode("utf-8", errors="replace")
    if isinstance(piece, bytes):
        return piece.decode("utf-8", errors="replace")
    if isinstance(piece, str):
        try:
            return bytes.fromhex(piece).decode("utf-8", errors="replace")
        except ValueError:
            return piece  # not the ledger's hex form: show it as the node wrote it
    return str(piece)


def to_token_bytes(text: str) -> bytes:
    """A merge side typed by the volunteer as token bytes (what ``Wallet.propose_merges`` takes)."""
    return text.encode("utf-8")


def visible(text: str) -> str:
    # "▁" (U+2581) marks a space, as SentencePiece does; common fonts have it, unlike "␠".
    return text.replace(" ", "▁").replace("\n", "↵").replace("\t", "→")


def describe_merge(left: Any, right: Any) -> str:
    a, b = piece_text(left), piece_text(right)
    return f'"{visible(a)}" + "{visible(b)}" → "{visible(a + b)}"'


def example_words(left: Any, right: Any, limit: int = 3, text: str = SAMPLE_TEXT) -> list[str]:
    """Words of ``text`` that contain the merged string (what the merge would make one token)."""
    joined = (piece_text(left) + piece_text(right)).strip()
    if not joined:
        return []
    found: list[str] = []
    for word in re.findall(r"[\w']+", text):
        if joined in word and word not in found:
            found.append(word)
            if len(found) == limit:
                break
    return found
