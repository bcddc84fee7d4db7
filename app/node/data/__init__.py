"""Genesis data: signed shard manifests, verified shard storage, deterministic batch loading.

Names are re-exported lazily (PEP 562) so ``python -m app.node.data.build`` does not pay for
importing torch (1.5–2 s, PLATFORM.md), which only the batch loader needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_genesis": "builder", "read_public_key": "builder",
    "bundled_genesis_dir": "bundled", "load_bundled_manifest": "bundled", "open_bundled_store": "bundled",
    "open_corpus_store": "bundled",
    "BatchLoader": "loader", "MissingShards": "loader", "share_shards": "loader",
    "BadShard": "manifest", "DataError": "manifest", "GenesisManifest": "manifest",
    "ManifestError": "manifest", "ShardInfo": "manifest",
    "ShardStore": "store",
    "FetchReport": "sync", "fetch_missing": "sync",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
