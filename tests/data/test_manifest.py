from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.crypto.keys import PrivateKey
from app.node.data.builder import MANIFEST_NAME, build_genesis
from app.node.data.manifest import EOS_ID, GenesisManifest, ManifestError
from app.node.tokenizer import NeuroTokenizer

from .conftest import TEXTS


def test_manifest_lists_every_shard_with_hash_and_tokens(corpus):
    out, manifest = corpus
    expected_tokens = sum(len(t.encode()) + 1 for t in TEXTS)
    assert manifest.total_tokens == expected_tokens
    assert len(manifest.shards) == -(-expected_tokens // 1024)
    assert all(s.tokens == 1024 for s in manifest.shards[:-1])
    for shard in manifest.shards:
        assert (out / shard.filename).stat().st_size == 2 * shard.tokens


def test_signed_manifest_loads_with_the_genesis_public_key(corpus, genesis_key):
    out, manifest = corpus
    loaded = GenesisManifest.load(out / MANIFEST_NAME, genesis_key.public_key.data.hex())
    assert loaded.shards == manifest.shards


def test_manifest_signed_by_another_key_is_refused(corpus):
    out, _ = corpus
    stranger = PrivateKey.generate()
    with pytest.raises(ManifestError, match="not the trusted"):
        GenesisManifest.load(out / MANIFEST_NAME, stranger.public_key)


@pytest.mark.parametrize("field,value", [("name", "renamed"), ("shard_tokens", 2048)])
def test_altered_manifest_fails_signature(corpus, genesis_key, field, value):
    out, _ = corpus
    raw = json.loads((out / MANIFEST_NAME).read_text())
    raw[field] = value
    (out / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="invalid signature"):
        GenesisManifest.load(out / MANIFEST_NAME, genesis_key.public_key)


def test_altered_shard_hash_in_manifest_fails_signature(corpus, genesis_key):
    out, _ = corpus
    raw = json.loads((out / MANIFEST_NAME).read_text())
    raw["shards"][0]["sha256"] = "0" * 64
    (out / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="invalid signature"):
        GenesisManifest.load(out / MANIFEST_NAME, genesis_key.public_key)


@pytest.mark.parametrize("mutate,reason", [
    (lambda d: d["shards"][0].update(id="../../etc/passwd"), "bad shard id"),
    (lambda d: d["shards"].append(dict(d["shards"][0])), "duplicate"),
    (lambda d: d.update(version=99), "unsupported version"),
    (lambda d: d.update(total_tokens=1), "total_tokens"),
    (lambda d: d["shards"][0].update(tokens=-5), "tokens must be"),
    (lambda d: d.update(signature="zz"), "signature must be"),
    (lambda d: d.pop("shards"), "shards must be"),
])
def test_malformed_manifest_is_refused_with_reason(corpus, mutate, reason):
    out, _ = corpus
    raw = json.loads((out / MANIFEST_NAME).read_text())
    mutate(raw)
    with pytest.raises(ManifestError, match=reason):
        GenesisManifest.from_dict(raw)


def test_unreadable_manifest_file_raises_manifest_error(tmp_path: Path, genesis_key):
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read"):
        GenesisManifest.load(tmp_path / "m.json", genesis_key.public_key)


def test_separator_matches_the_tokenizer_eos():
    assert NeuroTokenizer.genesis().eos_id == EOS_ID


def test_empty_texts_cannot_build_a_corpus(tmp_path, genesis_key):
    from app.node.data.manifest import DataError
    with pytest.raises(DataError, match="empty"):
        build_genesis(["", ""], tmp_path, key=genesis_key)
