"""Stake for a devnet's verify-mode nodes: a verifier's verdicts count only with stake, and a
fresh devnet has no coins. ``fund_verifiers`` creates each verifier's wallet in its data dir (as
the node would on first start, unprotected as a headless devnet node is) and writes a genesis
grant and a stake into every given ledger before the nodes start; gossip spreads them.

The genesis key is derived from a fixed string: it is public, so it is only ever accepted by a
ledger whose config names it (the devnet's), never by the main network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.crypto.keys import PrivateKey
from app.node.economics.constants import from_settings, neuro
from app.node.economics.genesis import genesis_record
from app.node.economics.ledger import Ledger
from app.node.economics.records import Record

DEVNET_GENESIS = PrivateKey(hashlib.sha256(b"neuroshard devnet genesis (public, devnet only)").digest())
GRANT = neuro(1000)
STAKE = neuro(200)


def devnet_node_key(index: int) -> PrivateKey:
    """Node ``index``'s key in every devnet: public like the genesis key, so a devnet run is
    repeatable (the node ids, and with them each driver's data order and the order contributions
    are merged in, are the same in every run of the same shape)."""
    return PrivateKey(hashlib.sha256(f"neuroshard devnet node {index} (public, devnet only)".encode()).digest())


def create_node_wallets(dirs: Iterable[Path]) -> None:
    """Each node's wallet (devnet_node_key of its index), unprotected as a headless devnet node's
    is, unless the dir already has one (a devnet run again in its workdir keeps its nodes)."""
    from app.node.identity import UNPROTECTED_PASSPHRASE
    from app.wallet.keystore import Keystore

    for index, d in enumerate(dirs):
        d.mkdir(parents=True, exist_ok=True)
        store = Keystore(d, use_keyring=False)  # a file the node processes open; not the volunteer's keyring
        if not store.has_key():
            store.import_key(devnet_node_key(index).to_bytes(), UNPROTECTED_PASSPHRASE)


def devnet_genesis_settings() -> dict[str, Any]:
    return {"preset": "devnet", "genesis_public_key": DEVNET_GENESIS.public_key.data.hex()}


def fund_verifiers(verifier_dirs: Iterable[Path], all_dirs: Iterable[Path], settings: dict[str, Any],
                   now_ms: int) -> list[str]:
    """Wallets for the verifiers, genesis grant + stake in every ledger; returns their addresses."""
    from app.node.identity import UNPROTECTED_PASSPHRASE
    from app.wallet.keystore import Keystore

    config = from_settings(settings)
    keys = []
    for d in verifier_dirs:
        d.mkdir(parents=True, exist_ok=True)
        # A file keystore even where an OS keyring answers: the node processes must open it by
        # themselves, and devnet keys do not belong in the volunteer's own keyring.
        store = Keystore(d, use_keyring=False)
        keys.append(store.unlock(UNPROTECTED_PASSPHRASE) if store.has_key() else store.create(UNPROTECTED_PASSPHRASE))
    records = [genesis_record(DEVNET_GENESIS, config, {k.address: GRANT for k in keys}, now_ms)]
    records += [Record.create(k, "stake", config.network_id, now_ms + 1, {"amount": STAKE}, seq=1) for k in keys]
    for d in all_dirs:
        d.mkdir(parents=True, exist_ok=True)  # Ledger(path) takes a missing path for the file itself
        ledger = Ledger(d, config)
        try:
            for record in records:
                result = ledger.submit(record.to_bytes(), now_ms + 1)
                if not result.accepted and result.status != "duplicate":
                    raise RuntimeError(f"devnet funding refused: {result.reason}")
        finally:
            ledger.close()
    return [k.address for k in keys]
