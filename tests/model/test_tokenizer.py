"""The byte-level BPE tokenizer: layout, round trips, deterministic merges across processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.node.model.architecture import GENESIS_VOCAB
from app.node.model.shard import PAD_ID
from app.node.tokenizer import FIRST_MERGE, NeuroTokenizer, TokenizerError

CORPUS = ["the cat sat on the mat, the hat is flat. " * 5, "héllo wörld, héllo again 1234567", "def f(x): return x"]
MERGED = NeuroTokenizer.genesis().apply_merges(NeuroTokenizer.genesis().propose_merges(CORPUS, 20))


def test_genesis_layout_is_bytes_then_ten_special_tokens() -> None:
    tok = NeuroTokenizer.genesis()
    assert tok.vocab_size == GENESIS_VOCAB == FIRST_MERGE == 266
    assert [tok.token_bytes(i) for i in range(256)] == [bytes([i]) for i in range(256)]
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (256, 257, 258)
    assert tok.pad_id == PAD_ID
    assert tok.token_label(258) == "<eos>"
    assert tok.encode(b"\x00\x7f\xff") == [0, 127, 255]
    assert tok.encode("é") == list("é".encode())


def test_user_text_never_produces_special_tokens() -> None:
    ids = MERGED.encode("<eos><pad><bos>")
    assert not any(256 <= i < FIRST_MERGE for i in ids)
    assert MERGED.decode(ids) == "<eos><pad><bos>"


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_text_round_trips(text: str) -> None:
    assert MERGED.decode(MERGED.encode(text)) == text


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_round_trip(data: bytes) -> None:
    assert MERGED.decode_bytes(MERGED.encode(data)) == data


def test_merges_get_ids_in_order_and_shorten_text() -> None:
    tok = NeuroTokenizer.genesis().apply_merges([(b"t", b"h"), (b"th", b"e"), (b" ", b"the")])
    assert tok.vocab_size == 269
    assert tok.token_bytes(266) == b"th" and tok.token_bytes(268) == b" the"
    assert tok.encode("the the") == [267, 268]
    assert NeuroTokenizer.genesis().vocab_size == 266  # apply_merges did not mutate


def test_invalid_merges_are_rejected_with_reason() -> None:
    tok = NeuroTokenizer.genesis()
    with pytest.raises(TokenizerError, match="not a token"):
        tok.apply_merges([(b"th", b"e")])
    with pytest.raises(TokenizerError, match="already token"):
        tok.apply_merges([(b"a", b"b"), (b"a", b"b")])
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode([266])


def test_propose_merges_picks_most_frequent_pairs_deterministically() -> None:
    tok = NeuroTokenizer.genesis()
    proposals = tok.propose_merges(["ab ab ab ab cd cd"], 2)
    assert proposals == [(b"a", b"b"), (b" ", b"ab")]
    assert tok.propose_merges(CORPUS, 20) == tok.propose_merges(list(CORPUS), 20)
    before = len(tok.encode(CORPUS[0]))
    assert len(MERGED.encode(CORPUS[0])) < before * 0.6


def test_proposals_extend_an_already_merged_tokenizer() -> None:
    more = MERGED.propose_merges(CORPUS, 5)
    assert more and all(a + b not in {MERGED.token_bytes(i) for i in range(MERGED.vocab_size)} for a, b in more)
    assert MERGED.apply_merges(more).vocab_size == MERGED.vocab_size + len(more)


def test_same_merges_give_same_ids_and_hash_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "tok.json"
    MERGED.save(path)
    script = (
        "import json, sys; from app.node.tokenizer import NeuroTokenizer as T\n"
        "t = T.genesis().apply_merges(T.genesis().propose_merges(json.loads(sys.argv[1]), 20))\n"
        "print(json.dumps([t.content_hash, t.encode(sys.argv[2])]))\n"
    )
    text = "the flat cat said héllo 1234567"
    out = subprocess.run([sys.executable, "-c", script, json.dumps(CORPUS), text], capture_output=True,
                         text=True, check=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    other_hash, other_ids = json.loads(out.stdout)
    assert other_hash == MERGED.content_hash
    assert other_ids == MERGED.encode(text)
    assert NeuroTokenizer.load(path).encode(text) == other_ids


def test_load_rejects_tampered_file(tmp_path: Path) -> None:
    path = tmp_path / "tok.json"
    MERGED.save(path)
    data = json.loads(path.read_text())
    data["merges"] = data["merges"][:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(TokenizerError, match="content hash"):
        NeuroTokenizer.load(path)
    path.write_text("not json")
    with pytest.raises(TokenizerError):
        NeuroTokenizer.load(path)
