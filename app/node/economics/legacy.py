"""The previous release's PoNW rules, for the version-1 proofs and challenges its ledgers hold.

Version 2 records (``records.py``) added the fields this release's rules need: a proof's work
span, measured layer cost and work root; a challenge's re-run step and evidence. A version-1
proof has none of them, so it can neither be bounded by its real cost nor re-executed.

Which rules a version-1 record is judged by must give every node the same balances from the
same records, so the choice reads nothing but the records:

* A version-1 proof or challenge counts under the rules it was made under (git 8a0f18d): the
  seed-001 tier table bounds a proof's batches, a "pass" locks no bond, and one staked "fail"
  that outnumbers the passes slashes (``V1_CHALLENGE_CONFIRMATIONS``; settlement.py). Those
  constants are frozen here, not read from today's config, whose defaults changed (two
  confirmations, no tier table): a ledger written before the upgrade keeps exactly the balances
  and statuses it had, and its stored state hash still matches (``ledger verify``).
* The two rule sets never judge each other's records: a version-1 challenge of a version-2
  proof, or a version-2 challenge (a re-run of a committed step) of a version-1 proof, which
  commits to no step, is refused.
* The old rules end when the network moves on: once a version-2 proof has been applied, every
  later version-1 proof or challenge in canonical order is refused. Otherwise anybody could
  keep signing version-1 proofs, which no verifier can re-run, and a single griefer could keep
  slashing with one verdict. The cut is a point in the canonical (timestamp, id) order, so it
  is the same on every node that holds the same records.
"""

from __future__ import annotations

from app.node.economics.constants import EconomicsConfig
from app.node.economics.records import V1, Record

V1_TIER_MIN_MS = {1: 1.0, 2: 10.0, 3: 50.0, 4: 200.0, 5: 1000.0}
"""The previous release's fastest plausible time per reference layer and batch per speed tier."""
V1_DEVNET_LAYER_COST = 1e-3
"""The previous release scaled that table by this on a devnet (its tiny model's layers); a
ledger of a network other than the main one is read with the scaled table."""
V1_CHALLENGE_CONFIRMATIONS = 1
"""The previous release's default: one staked fail verdict that outnumbered passes slashed."""
MAIN_NETWORK = "neuroshard-main"


class LegacyRefused(Exception):
    """A version-1 record the rules above refuse; the message is its status reason."""


def is_v1(record: Record) -> bool:
    return record.version == V1


def check_still_open(v2_seen: bool) -> None:
    """Refuses a version-1 proof or challenge that comes after the network's first version-2 proof."""
    if v2_seen:
        raise LegacyRefused("made by a previous release after this network moved to record version 2; "
                            "update NeuroShard Node")


def check_same_rules(challenge: Record, proof: Record) -> None:
    if is_v1(challenge) != is_v1(proof):
        raise LegacyRefused(f"a version-{challenge.version} verdict cannot judge a version-{proof.version} "
                            "proof (different rules: legacy.py)")


def max_batches(tier: int, layers: int, config: EconomicsConfig) -> int:
    """Most batches a node of ``tier`` holding ``layers`` layers could claim per epoch (v1 bound)."""
    scale = 1.0 if config.network_id == MAIN_NETWORK else V1_DEVNET_LAYER_COST
    per_batch_ms = V1_TIER_MIN_MS[tier] * scale * max(layers, 1)
    return int(config.epoch_ms / per_batch_ms)
