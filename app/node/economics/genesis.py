"""The genesis allocation: the only way NEURO exists before any proof is rewarded.

A network's config carries the genesis public key; the one ``genesis`` record that key signs
credits the initial balances (amounts may be 0: a network can start from proofs alone).
A devnet makes its own key and config, so its coins can never be replayed on another network
(the network id is signed into every record).
"""

from __future__ import annotations

import dataclasses
import time

from app.crypto.keys import PrivateKey
from app.node.economics.constants import EconomicsConfig
from app.node.economics.records import Record


def genesis_record(key: PrivateKey, config: EconomicsConfig, allocations: dict[str, int],
                   timestamp_ms: int | None = None) -> Record:
    """The signed allocation; ``key`` must be the config's genesis key to be accepted."""
    if key.public_key.data.hex() != config.genesis_public_key:
        raise ValueError("this key is not the network's genesis key (economics.genesis_public_key)")
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    body = {"allocations": [[address, amount] for address, amount in sorted(allocations.items())]}
    return Record.create(key, "genesis", config.network_id, ts, body)


def new_devnet(allocations: dict[str, int], network_id: str | None = None,
               **overrides: object) -> tuple[EconomicsConfig, PrivateKey, Record]:
    """A fresh devnet: its config (devnet timescale), its genesis key and the signed allocation."""
    key = PrivateKey.generate()
    config = EconomicsConfig.devnet(genesis_public_key=key.public_key.data.hex(), **overrides)
    if network_id is not None:
        config = dataclasses.replace(config, network_id=network_id)
    return config, key, genesis_record(key, config, allocations)
