from __future__ import annotations

from pathlib import Path

import pytest

from app.crypto.keys import PrivateKey
from app.node.data.builder import build_genesis
from app.node.data.manifest import GenesisManifest

TEXTS = [f"Document {i}: the quick brown fox {i * 7} jumps over the lazy dog. " * (3 + i % 5)
         for i in range(40)]


@pytest.fixture(scope="session")
def genesis_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture
def corpus(tmp_path: Path, genesis_key: PrivateKey) -> tuple[Path, GenesisManifest]:
    out = tmp_path / "corpus"
    manifest = build_genesis(TEXTS, out, key=genesis_key, shard_tokens=1024, name="test-corpus")
    return out, manifest
