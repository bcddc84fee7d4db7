"""A devnet whose wallet is funded at genesis, for the GUI tests of the wallet and governance pages.

A new node earns only crumbs, so it has nothing to send, stake or vote with. Instead the test's
data dir gets what a devnet's founders would give it: before the node starts, its own ledger file
(``ledger.sqlite`` in the data dir, the one the node's EconomyService opens) receives a genesis
allocation signed by a test genesis key, two vocabulary proposals by another account and a stake
signed by the wallet itself. The node's config names that genesis key (``economics.
genesis_public_key``), so the real runtime accepts these records exactly as it would from gossip.
Nothing of the node is replaced.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from app.crypto.keys import PrivateKey
from app.node.economics.constants import from_settings, neuro
from app.node.economics.genesis import genesis_record
from app.node.economics.ledger import Ledger
from app.node.economics.records import Record
from app.wallet.keystore import Keystore
from app.wallet.wallet import Wallet

PASSWORD = "correct horse battery"
GENESIS_KEY = PrivateKey((4242).to_bytes(32, "big"))
PROPOSER_KEY = PrivateKey((4343).to_bytes(32, "big"))
GRANT_UNITS = neuro(1000)
STAKE_UNITS = neuro(200)
DISCUSSION_MS = 300
VOTING_MS = 900_000
"""Long enough that a node shared by one test module keeps its proposal open for the module."""
OPEN_PROPOSAL = "Common English pairs"
SECOND_PROPOSAL = "Word endings"
CLOSED_PROPOSAL = "Closed vote"
PROPOSALS = (  # title, merges (hex byte strings), created this long before the node starts
    (CLOSED_PROPOSAL, [("65", "72"), ("6572", "73")], DISCUSSION_MS + VOTING_MS + 60_000),  # e+r, er+s
    (OPEN_PROPOSAL, [("74", "68"), ("7468", "65"), ("20", "746865")], 0),  # t+h, th+e, " "+the
    (SECOND_PROPOSAL, [("69", "6e"), ("696e", "67")], 0),  # i+n, in+g
)
"""Two open proposals: an account votes once on each, and two tests vote on a shared node."""


def fast_keystore(data_dir: Path) -> Keystore:
    """The file keystore with a cheap scrypt (2**14): tests must not touch the OS keyring."""
    return Keystore(data_dir, use_keyring=False, scrypt_n=2**14)


def devnet_economics() -> dict[str, Any]:
    """``[economics]`` of the test devnet: its genesis key, and phases a test can wait out."""
    return {"preset": "devnet", "genesis_public_key": GENESIS_KEY.public_key.data.hex(),
            "discussion_ms": DISCUSSION_MS, "voting_ms": VOTING_MS}


def fund_at_genesis(data_dir: Path, economics: dict[str, Any]) -> str:
    """Write the devnet's opening records into the node's ledger; returns the wallet's address.

    Call it after the wallet exists and before the node starts (the node opens the same file).
    """
    config = from_settings(economics)
    keystore = fast_keystore(data_dir)
    me = keystore.address
    assert me is not None, "create the wallet first"
    now = int(time.time() * 1000)
    ledger = Ledger(data_dir, config)
    try:
        start = now - max(age for _t, _m, age in PROPOSALS) - 1000
        genesis = genesis_record(GENESIS_KEY, config, {me: GRANT_UNITS, PROPOSER_KEY.address: GRANT_UNITS}, start)
        _accept(ledger, genesis, start)
        for seq, (title, merges, age_ms) in enumerate(PROPOSALS, start=1):  # oldest first: seqs in time order
            record = Record.create(PROPOSER_KEY, "proposal", config.network_id, now - age_ms,
                                   {"title": title, "merges": [list(m) for m in merges]}, seq=seq)
            _accept(ledger, record, now - age_ms)  # as if it had arrived then
        wallet = Wallet(keystore, ledger)
        wallet.unlock(PASSWORD)
        result = wallet.stake(STAKE_UNITS)
        assert result.accepted, result.reason
        wallet.lock()
    finally:
        ledger.close()
    return me


def _accept(ledger: Ledger, record: Record, now_ms: int) -> None:
    result = ledger.submit(record.to_bytes(), now_ms)
    assert result.accepted, f"{record.kind}: {result.reason}"
