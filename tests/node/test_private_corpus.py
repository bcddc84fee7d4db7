"""A private devnet trains on the operator's own text instead of the bundled sample."""

import asyncio

import pytest

from app.crypto.keys import PrivateKey
from app.node.data.builder import PUBLIC_KEY_NAME, build_genesis
from app.node.data.manifest import DataError
from app.node.runtime.data_service import DataService

TEXT = "Volunteers keep their own notes; a private network can learn from them. " * 200


def test_data_service_opens_a_private_corpus_signed_by_its_own_key(tmp_path) -> None:
    key = PrivateKey.generate()
    build_genesis([TEXT], tmp_path / "corpus", key=key, name="notes", shard_tokens=4096)
    service = DataService(tmp_path / "node", "n1", corpus_dir=str(tmp_path / "corpus"))
    store = asyncio.run(service.open())  # key read from the file the build wrote beside the shards
    assert store.manifest.name == "notes" and not store.missing()
    raw = store.get(store.manifest.shards[0].shard_id)  # little-endian uint16 byte tokens
    tokens = bytes(int.from_bytes(raw[i:i + 2], "little") % 256 for i in range(0, 400, 2))
    assert TEXT[:40].encode() in tokens


def test_a_corpus_signed_by_another_key_is_refused(tmp_path) -> None:
    build_genesis([TEXT], tmp_path / "corpus", key=PrivateKey.generate(), name="notes")
    stranger = PrivateKey.generate().public_key.data.hex()
    service = DataService(tmp_path / "node", "n1", corpus_dir=str(tmp_path / "corpus"), genesis_public_key=stranger)
    with pytest.raises(DataError):
        asyncio.run(service.open())


def test_a_corpus_without_its_key_says_what_to_set(tmp_path) -> None:
    build_genesis([TEXT], tmp_path / "corpus", key=PrivateKey.generate(), name="notes")
    (tmp_path / "corpus" / PUBLIC_KEY_NAME).unlink()
    with pytest.raises(DataError, match="genesis_public_key"):
        asyncio.run(DataService(tmp_path / "node", "n1", corpus_dir=str(tmp_path / "corpus")).open())
