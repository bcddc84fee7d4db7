from __future__ import annotations

import random
import string

import numpy as np
import pytest
import torch

from app.node.data.builder import build_genesis
from app.node.data.loader import BatchLoader, MissingShards, reencode, share_shards
from app.node.data.manifest import EOS_ID
from app.node.data.store import ShardStore
from app.node.tokenizer import NeuroTokenizer


def _loader(corpus, **kw) -> BatchLoader:
    out, manifest = corpus
    args = {"batch_size": 4, "seq_len": 32, "seed": 7} | kw
    return BatchLoader(ShardStore(out, manifest), manifest, **args)


def _rows(loader: BatchLoader, batches: int) -> list[tuple[int, ...]]:
    rows = []
    for _ in range(batches):
        inputs, targets = loader.next_batch()
        rows += [tuple(r.tolist()) for r in torch.cat([inputs, targets[:, -1:]], dim=1)]
    return rows


def test_batches_are_shifted_next_token_pairs(corpus):
    inputs, targets = _loader(corpus).next_batch()
    assert inputs.shape == targets.shape == (4, 32)
    assert inputs.dtype == targets.dtype == torch.long
    assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_same_seed_and_share_give_identical_batches(corpus):
    a, b = _loader(corpus), _loader(corpus)
    assert _rows(a, 5) == _rows(b, 5)
    assert _rows(_loader(corpus, seed=8), 5) != _rows(_loader(corpus), 5)


@pytest.mark.parametrize("count", [2, 3, 50])
def test_shares_are_disjoint_and_cover_the_corpus(tmp_path, genesis_key, count):
    rng = random.Random(3)  # random text: no two windows are equal, so sets of rows identify windows
    texts = ["".join(rng.choice(string.ascii_letters) for _ in range(300)) for _ in range(30)]
    corpus = (tmp_path / "c", build_genesis(texts, tmp_path / "c", key=genesis_key, shard_tokens=1024))
    loaders = [_loader(corpus, share=(i, count), batch_size=1) for i in range(count)]
    seen = [set(_rows(lo, lo.windows_per_epoch)) for lo in loaders]
    for i in range(count):
        for j in range(i + 1, count):
            assert not seen[i] & seen[j]
    everyone = _loader(corpus, batch_size=1)
    assert set().union(*seen) == set(_rows(everyone, everyone.windows_per_epoch))


def test_shard_level_share_needs_only_its_own_shards(corpus):
    _, manifest = corpus
    assert len(manifest.shards) >= 3
    needed = share_shards(manifest, (1, 3))
    assert needed == manifest.shard_ids[1::3]


def test_resume_from_state_dict_continues_the_stream(corpus):
    reference = _loader(corpus)
    _rows(reference, 3)
    state = reference.state_dict()
    expected = _rows(reference, 20)  # crosses an epoch boundary
    resumed = _loader(corpus)
    resumed.load_state_dict(state)
    assert _rows(resumed, 20) == expected


def test_state_from_another_share_is_refused(corpus):
    from app.node.data.manifest import DataError
    state = _loader(corpus, share=(0, 2)).state_dict()
    with pytest.raises(DataError, match="does not match"):
        _loader(corpus, share=(1, 2)).load_state_dict(state)


def test_loader_reports_missing_shards(corpus, tmp_path):
    _, manifest = corpus
    with pytest.raises(MissingShards) as info:
        BatchLoader(ShardStore(tmp_path / "empty", manifest), manifest, batch_size=1, seq_len=8)
    assert info.value.shard_ids == manifest.shard_ids


def test_merges_reencode_documents_and_keep_separators():
    text_a, text_b = b"the cat the hat", b"the end"
    genesis = np.array([*text_a, EOS_ID, *text_b, EOS_ID], dtype=np.uint16)
    base = NeuroTokenizer.genesis()
    assert reencode(genesis, EOS_ID, base).tolist() == genesis.tolist()
    grown = base.apply_merges(base.propose_merges([text_a.decode()] * 5, 2))
    assert len(grown.merges) == 2
    ids = reencode(genesis, EOS_ID, grown).tolist()
    assert ids == [*grown.encode(text_a), EOS_ID, *grown.encode(text_b), EOS_ID]
    assert len(ids) < genesis.size


def test_loader_with_grown_tokenizer_yields_merged_ids(corpus):
    out, manifest = corpus
    base = NeuroTokenizer.genesis()
    grown = base.apply_merges(base.propose_merges(["the quick brown fox jumps over the lazy dog"] * 10, 4))
    loader = BatchLoader(ShardStore(out, manifest), manifest, batch_size=2, seq_len=16, tokenizer=grown)
    inputs, _ = loader.next_batch()
    assert int(inputs.max()) >= 266
