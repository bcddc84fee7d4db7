"""Vocabulary growth on the data path (merge application, loader) and on a running stage."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from training_helpers import ARCH, make_stage, patterned_batch, tiny_config

from app.node.data.builder import build_genesis
from app.node.data.loader import BatchLoader, MergedStream, apply_merge_ids, reencode
from app.node.data.manifest import EOS_ID
from app.node.data.store import ShardStore
from app.node.model.shard import lm_loss
from app.node.tokenizer import FIRST_MERGE, NeuroTokenizer
from app.node.training.pipeline import PipelineDriver, PipelineStalled
from app.node.training.stage import VOCAB_MISMATCH
from app.node.training.sync import StageSync
from app.node.training.transport import OP_FORWARD, LocalTransport
from app.node.training.vocab_growth import VocabGuard, VocabMismatch, VocabTaggedTransport, grow_stage_vocab

ALPHABET = "aab  b\tc1234x.,!é\n"
TEXT = st.lists(st.sampled_from([*ALPHABET, "aa", "ab", "  ", "12", "éé", "\x00", "\xff"]), max_size=40).map("".join)


def _grown(corpus: list[str], k: int) -> NeuroTokenizer:
    base = NeuroTokenizer.genesis()
    return base.apply_merges(base.propose_merges(corpus, k))


# --- merge application on token arrays == the tokenizer -------------------------------------------
@settings(max_examples=60, deadline=None)
@given(docs=st.lists(TEXT, min_size=1, max_size=5), train=st.lists(TEXT, min_size=1, max_size=6),
       k=st.integers(1, 25))
def test_merges_on_token_arrays_equal_the_tokenizer(docs: list[str], train: list[str], k: int) -> None:
    tok = _grown(train + docs, k)
    _check_same_ids(tok, docs)


BYTE = st.sampled_from(sorted({bytes([b]) for b in ALPHABET.encode()}))


@settings(max_examples=150, deadline=None)
@example(docs=["a b", "1a. aa", "x"], pairs=[(b"a", b" "), (b"1", b"a"), (b"a", b"."), (b"x", b"a")])
@given(docs=st.lists(TEXT, min_size=1, max_size=5), pairs=st.lists(st.tuples(BYTE, BYTE), max_size=12))
def test_any_merges_never_cross_pretokens_or_documents(docs: list[str], pairs: list[tuple[bytes, bytes]]) -> None:
    merges, known = [], {bytes([b]) for b in range(256)}
    for left, right in pairs:  # arbitrary merges, also across character classes ("1" + "a", "a" + " ")
        if left + right not in known:
            merges.append((left, right))
            known.add(left + right)
    _check_same_ids(NeuroTokenizer(merges), docs)


def _check_same_ids(tok: NeuroTokenizer, docs: list[str]) -> None:
    genesis = np.array([t for d in docs for t in [*d.encode(), EOS_ID]], dtype=np.uint16)
    expected = [t for d in docs for t in [*tok.encode(d), EOS_ID]]
    assert reencode(genesis, EOS_ID, tok).tolist() == expected


def test_runs_of_one_byte_merge_left_to_right_like_bpe() -> None:
    tok = NeuroTokenizer([(b"a", b"a"), (b"aa", b"a")])
    genesis = np.frombuffer(b"aaaa aaaaa a aaa", dtype=np.uint8).astype(np.uint16)
    assert reencode(genesis, EOS_ID, tok).tolist() == tok.encode("aaaa aaaaa a aaa")


def test_merges_applied_in_two_rounds_equal_one_round() -> None:
    tok = _grown(["the cat sat on the mat with the hat"] * 3, 12)
    stream = MergedStream.genesis(np.frombuffer(b"the cat sat on the mat", dtype=np.uint8))
    once = apply_merge_ids(stream, tok.merge_ids, FIRST_MERGE)
    first = apply_merge_ids(stream, tok.merge_ids[:5], FIRST_MERGE)
    twice = apply_merge_ids(first, tok.merge_ids[5:], FIRST_MERGE + 5)
    assert once.ids.tolist() == twice.ids.tolist() == tok.encode("the cat sat on the mat")
    assert once.positions.tolist() == twice.positions.tolist()
    assert stream.ids.tolist() == list(b"the cat sat on the mat")  # the input is not modified


# --- the loader across a vocabulary change ------------------------------------------------------------
TEXTS = [f"Document {i}: the quick brown fox {i * 7} jumps over the lazy dog. " * (3 + i % 5) for i in range(40)]


@pytest.fixture
def corpus(tmp_path, genesis_key):  # noqa: ANN001, ANN201
    out = tmp_path / "corpus"
    return out, build_genesis(TEXTS, out, key=genesis_key, shard_tokens=1024, name="vocab-test")


@pytest.fixture(scope="module")
def genesis_key():  # noqa: ANN201
    from app.crypto.keys import PrivateKey

    return PrivateKey.generate()


def _loader(corpus, tokenizer=None) -> BatchLoader:  # noqa: ANN001
    out, manifest = corpus
    return BatchLoader(ShardStore(out, manifest), manifest, batch_size=3, seq_len=24, seed=5, tokenizer=tokenizer)


def test_loader_switches_ids_but_keeps_its_position(corpus) -> None:  # noqa: ANN001
    tok = _grown(TEXTS, 30)
    plain, switched = _loader(corpus), _loader(corpus)
    for _ in range(4):
        assert torch.equal(plain.next_batch()[0], switched.next_batch()[0])
    switched.set_tokenizer(tok)
    assert switched.state_dict() == plain.state_dict()
    for _ in range(6):
        (a, _), (b, b_targets) = plain.next_batch(), switched.next_batch()
        assert switched.state_dict() == plain.state_dict()
        assert int(b.max()) >= FIRST_MERGE
        for row_a, row_b in zip(a.tolist(), b.tolist(), strict=True):
            text_a = tok.decode_bytes(row_a)  # genesis ids are valid ids of the grown tokenizer
            text_b = tok.decode_bytes(row_b)
            # the same window starts at the same text (a token straddling the grid point is skipped)
            skip = next(n for n in range(8) if text_b.startswith(text_a[n:n + 8]))
            assert text_b.startswith(text_a[skip:])
        assert torch.equal(b[:, 1:], b_targets[:, :-1])
    resumed = _loader(corpus, tok)
    resumed.load_state_dict(switched.state_dict())
    assert torch.equal(resumed.next_batch()[0], switched.next_batch()[0])


def test_incremental_switch_equals_loading_with_the_final_tokenizer(corpus) -> None:  # noqa: ANN001
    tok = _grown(TEXTS, 20)
    halfway = NeuroTokenizer(tok.merges[:8])
    stepwise = _loader(corpus, halfway)
    stepwise.set_tokenizer(tok)
    direct = _loader(corpus, tok)
    for _ in range(5):
        assert torch.equal(stepwise.next_batch()[0], direct.next_batch()[0])
    stepwise.set_tokenizer(NeuroTokenizer.genesis())  # a rewind recomputes from the genesis tokens
    assert torch.equal(stepwise.next_batch()[0], _loader_at(corpus, direct.state_dict()).next_batch()[0])


def _loader_at(corpus, state) -> BatchLoader:  # noqa: ANN001
    loader = _loader(corpus)
    loader.load_state_dict(state)
    return loader


# --- a stage grown mid-training ---------------------------------------------------------------------------
CONFIG = tiny_config(inner_steps=3)
TOK = NeuroTokenizer([(b"a", b"b"), (b"c", b"d"), (b"ab", b"cd")])


def _pipeline() -> tuple[PipelineDriver, dict[str, object]]:
    net = LocalTransport()
    syncs: dict[str, StageSync] = {}
    first = make_stage((0, 2), CONFIG, after_commit=_after_commit(syncs, "first"))
    last = make_stage((2, ARCH.layers), CONFIG, after_commit=_after_commit(syncs, "last"))
    syncs.update(first=StageSync("d", first, None, CONFIG), last=StageSync("h", last, None, CONFIG))
    net.add_peer("head", (2, ARCH.layers), last.handle)
    driver = PipelineDriver("d", first, [2], net, micro_batches=CONFIG.micro_batches)
    return driver, {"first": first, "last": last, "syncs": syncs, "net": net}


def _after_commit(syncs: dict[str, StageSync], name: str):  # noqa: ANN202
    async def run(_stage: object) -> None:
        sync = syncs[name]
        sync.note_commit()
        if sync.due:
            await sync.sync()

    return run


@torch.no_grad()
def _logits(parts: dict, ids: torch.Tensor) -> torch.Tensor:
    parts["first"].shard.eval()
    parts["last"].shard.eval()
    return parts["last"].shard(parts["first"].shard(ids))


def test_grown_stage_keeps_old_logits_and_trains_on() -> None:
    driver, parts = _pipeline()

    async def train(steps: int, start: int, batches) -> list[float]:  # noqa: ANN001
        return [(await driver.train_step(start + i, batches(i))).loss for i in range(steps)]

    asyncio.run(train(3, 0, lambda i: patterned_batch(CONFIG, i)))
    old = patterned_batch(CONFIG, 99)
    before = _logits(parts, old[:, :-1])
    loss_before = float(lm_loss(before, old[:, 1:]))
    sources = TOK.merge_ids
    for name in ("first", "last"):
        grow_stage_vocab(parts[name], parts["syncs"][name], sources, TOK.version)
    after = _logits(parts, old[:, :-1])
    assert after.shape[-1] == ARCH.vocab + 3
    assert torch.equal(after[..., :ARCH.vocab], before)  # every old token's logit is unchanged
    assert abs(float(lm_loss(after, old[:, 1:])) - loss_before) < 0.05  # the new tokens take little mass
    for name in ("first", "last"):
        stage, sync = parts[name], parts["syncs"][name]
        for p in stage.params:
            if p in stage.optimizer.state:
                assert stage.optimizer.state[p]["exp_avg"].shape == p.shape
        assert {n: tuple(t.shape) for n, t in sync.replica.anchor.items()} == \
            {n: tuple(p.shape) for n, p in stage.shard.named_parameters()}
        assert sync.replica.tracks(stage.shard)

    def with_new_ids(i: int) -> torch.Tensor:
        batch = patterned_batch(CONFIG, i).clone()
        batch[:, ::5] = ARCH.vocab + i % 3  # the new tokens appear in the data
        return batch

    losses = asyncio.run(train(12, 3, with_new_ids))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert parts["syncs"]["first"].rounds == parts["syncs"]["last"].rounds == 5


# --- the guard ---------------------------------------------------------------------------------------
def test_a_request_for_another_vocabulary_is_refused_without_computing() -> None:
    stage = make_stage((2, ARCH.layers), CONFIG, vocab=VocabGuard(NeuroTokenizer.genesis().version))
    x = torch.randn(2, 8, ARCH.hidden)
    meta = {"driver": "d", "step": 0, "mb": 0, "vocab": TOK.version}
    out, tensors = asyncio.run(stage.handle(OP_FORWARD, meta, [x, torch.zeros(2, 8, dtype=torch.long)]))
    assert out["status"] == VOCAB_MISMATCH and out["vocab"] == stage.vocab and tensors == []
    assert TOK.version in out["error"]
    assert stage._acc == {} and stage.inner_step == 0  # nothing was accumulated
    meta["vocab"] = stage.vocab
    out, tensors = asyncio.run(stage.handle(OP_FORWARD, meta, [x, torch.zeros(2, 8, dtype=torch.long)]))
    assert "loss" in out and tensors


def test_tagged_transport_turns_a_refusal_into_a_retryable_error_and_reports_it() -> None:
    driver, parts = _pipeline()
    for name in ("first", "last"):
        parts[name].vocab_guard.retag(NeuroTokenizer.genesis().version)
    heard: list[str] = []

    async def on_mismatch(theirs: str) -> None:
        heard.append(theirs)

    driver.transport = VocabTaggedTransport(parts["net"], lambda: TOK.version, on_mismatch)
    parts["net"].attempts = 2
    with pytest.raises(PipelineStalled):
        asyncio.run(driver.train_step(0, patterned_batch(CONFIG, 0)))
    assert heard and set(heard) == {NeuroTokenizer.genesis().version}
    assert parts["last"].inner_step == 0 and parts["first"].inner_step == 0
    assert issubclass(VocabMismatch, Exception) and VocabMismatch("x", "y").peer is None
    driver.transport = VocabTaggedTransport(parts["net"], lambda: parts["first"].vocab, on_mismatch)
    asyncio.run(driver.train_step(0, patterned_batch(CONFIG, 0)))  # agreeing tags go through
    assert parts["last"].inner_step == 1
