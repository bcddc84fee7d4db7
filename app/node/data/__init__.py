"""Genesis data: signed shard manifests, verified shard storage, deterministic batch loading."""

from app.node.data.builder import build_genesis, read_public_key
from app.node.data.bundled import bundled_genesis_dir, load_bundled_manifest, open_bundled_store
from app.node.data.loader import BatchLoader, MissingShards, share_shards
from app.node.data.manifest import BadShard, DataError, GenesisManifest, ManifestError, ShardInfo
from app.node.data.store import ShardStore
from app.node.data.sync import FetchReport, fetch_missing

__all__ = [
    "BadShard", "BatchLoader", "DataError", "FetchReport", "GenesisManifest", "ManifestError",
    "MissingShards", "ShardInfo", "ShardStore", "build_genesis", "bundled_genesis_dir",
    "fetch_missing", "load_bundled_manifest", "open_bundled_store", "read_public_key", "share_shards",
]
