from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.node.data.builder import read_public_key
from app.node.data.bundled import load_bundled_manifest, open_bundled_store
from app.node.data.loader import BatchLoader
from app.node.data.manifest import GenesisManifest

ROOT = Path(__file__).resolve().parents[2]


def test_bundled_corpus_verifies_and_trains_a_batch(tmp_path):
    manifest = load_bundled_manifest()
    assert manifest.total_tokens >= 500_000
    store = open_bundled_store(tmp_path)
    assert store.missing() == []
    inputs, targets = BatchLoader(store, manifest, batch_size=2, seq_len=64, share=(1, 4)).next_batch()
    assert inputs.shape == (2, 64) and int(targets.max()) < 266


def test_bundled_corpus_stays_small():
    size = sum(p.stat().st_size for p in (ROOT / "resources" / "genesis").iterdir())
    assert size < 4_000_000


def test_build_cli_makes_a_private_corpus_a_devnet_can_verify(tmp_path):
    texts = []
    for i in range(3):
        path = tmp_path / f"notes{i}.txt"
        path.write_text(f"My own notes, file {i}. " * 200)
        texts.append(str(path))
    out = tmp_path / "corpus"
    key_file = tmp_path / "genesis.key"
    done = subprocess.run([sys.executable, "-m", "app.node.data.build", "--input", *texts, "--out", str(out),
                           "--shard-tokens", "2048", "--key-out", str(key_file)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    manifest = GenesisManifest.load(out / "manifest.json", read_public_key(out))
    assert manifest.total_tokens == sum(len(Path(t).read_bytes()) + 1 for t in texts)
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_build_cli_reports_missing_input(tmp_path):
    done = subprocess.run([sys.executable, "-m", "app.node.data.build", "--input", str(tmp_path / "nope.txt"),
                           "--out", str(tmp_path / "c")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not found" in done.stderr


def test_a_private_corpus_opens_only_with_its_own_key(corpus, tmp_path, genesis_key):
    from app.crypto.keys import PrivateKey
    from app.node.data.bundled import open_corpus_store
    from app.node.data.manifest import ManifestError

    out, manifest = corpus
    store = open_corpus_store(tmp_path / "node", out, genesis_key.public_key.data.hex())
    assert store.missing() == [] and store.manifest.shards == manifest.shards
    with pytest.raises(ManifestError):
        open_corpus_store(tmp_path / "other", out, PrivateKey.generate().public_key.data.hex())
