"""The sample corpus that ships with the app in resources/genesis/ (see its README.md).

Its genesis public key is committed beside it (``genesis_public_key.hex``); its private key was
discarded after signing, so nobody can re-sign an altered copy. A node with no network at all
trains on it (DESIGN.md §5): ``open_bundled_store`` copies the verified shards into the node's
data dir, from where a data-mode node also serves them to peers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.node.data.builder import MANIFEST_NAME, read_public_key
from app.node.data.manifest import DataError, GenesisManifest
from app.node.data.store import ShardStore


def bundled_genesis_dir() -> Path:
    """resources/genesis/ in a checkout, or inside a PyInstaller bundle when frozen."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    root = Path(frozen_root) if frozen_root else Path(__file__).resolve().parents[3]
    return root / "resources" / "genesis"


def bundled_public_key() -> str:
    """The committed genesis public key (hex) that the bundled manifest must be signed by."""
    return read_public_key(bundled_genesis_dir())


def load_bundled_manifest() -> GenesisManifest:
    """The bundled corpus's manifest, signature checked against the committed public key."""
    directory = bundled_genesis_dir()
    if not (directory / MANIFEST_NAME).is_file():
        raise DataError(f"the bundled genesis corpus is missing from {directory}; "
                        "regenerate it with `python scripts/make_genesis.py`")
    return GenesisManifest.load(directory / MANIFEST_NAME, bundled_public_key())


def open_bundled_store(data_dir: Path | str) -> ShardStore:
    """A ShardStore under ``data_dir/genesis`` seeded with every verified bundled shard."""
    return open_corpus_store(data_dir, bundled_genesis_dir(), bundled_public_key())


def open_corpus_store(data_dir: Path | str, corpus_dir: Path | str, public_key: str | bytes) -> ShardStore:
    """A ShardStore under ``data_dir/genesis/<name>`` for the corpus in ``corpus_dir`` (built by
    ``python -m app.node.data.build``), its manifest checked against ``public_key``, seeded with
    every shard found there that verifies. A private devnet passes its own folder and key; a node
    that only has the manifest (and the key) fetches the shards from data nodes later."""
    manifest = GenesisManifest.load(Path(corpus_dir) / MANIFEST_NAME, public_key)
    store = ShardStore(Path(data_dir) / "genesis" / manifest.name, manifest)
    store.install_from(corpus_dir)
    return store
