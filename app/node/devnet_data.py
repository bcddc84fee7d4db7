"""``devnet --fetch-data N``: the last N nodes start with the genesis manifest only.

They hold no shard, so at start they fetch every shard from the nodes that have them (data
mode), verify each against the signed manifest, and sign receipts for what each server sent
(runtime/data_receipts.py): the servers' data proofs are then paid from those receipts. The
devnet uses the bundled corpus; a fetching node's ``training.corpus_dir`` is a folder beside
its data dir holding only the bundled manifest and its public key.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

MANIFEST_ONLY_DIR = "corpus-manifest-only"


def fetching_training(training: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """The ``[training]`` section of a node that must fetch its shards: ``corpus_dir`` names a
    folder (created here) with the bundled manifest and key and no shard."""
    from app.node.data.builder import MANIFEST_NAME, PUBLIC_KEY_NAME
    from app.node.data.bundled import bundled_genesis_dir

    folder = data_dir.parent / f"{data_dir.name}-{MANIFEST_ONLY_DIR}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST_NAME, PUBLIC_KEY_NAME):
        shutil.copyfile(bundled_genesis_dir() / name, folder / name)
    return {**training, "corpus_dir": str(folder.resolve())}
