"""Architecture upgrades: the growth plan from one version to the next and its signed record.

The layer pool re-computes the architecture from the network's memory (seed 000: every 50
joined nodes, upgrade at ≥ 1.3× parameters). What the scaler picks is not always reachable by
function-preserving growth (model/growth.py keeps the head size, widens by whole query groups,
and only ever grows), so ``plan_upgrade`` turns the scaler's candidate into the nearest larger
shape growth can reach and spells out how: width first (hidden, heads, FFN; ``norm_eps`` scaled
as growth.py requires to stay exact), then ``inserted`` identity blocks before layer
``insert_at`` of the widened model. That shape and plan are what every node migrates to, so they
travel together in one :class:`UpgradeRecord`, signed by the node that computed it (DESIGN.md
§8). Every node re-derives the plan from the record's ``from`` architecture and refuses a record
whose plan does not match what it computes itself: a peer cannot talk the network into a shape
that is not the deterministic growth of the current one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from app.crypto.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, PrivateKey, verify
from app.node.model.architecture import ModelArchitecture, should_upgrade

RECORD_VERSION = 1
MAX_RECORD_BYTES = 16 * 1024
MAX_NODES = 10**9


class InvalidUpgrade(ValueError):
    """An upgrade record that is malformed, badly signed or not the growth of its base."""


@dataclass(frozen=True, kw_only=True)
class GrowthPlan:
    """How ``source`` becomes ``target``: widen, then insert ``inserted`` blocks before
    ``insert_at`` (a layer index of the widened model, which has ``source.layers`` layers)."""

    source: ModelArchitecture
    target: ModelArchitecture
    insert_at: int
    inserted: int

    @property
    def widens(self) -> bool:
        return (self.target.hidden, self.target.ffn, self.target.heads) != (
            self.source.hidden, self.source.ffn, self.source.heads)

    def new_index(self, old_layer: int) -> int:
        """Where an existing block sits after growth (blocks from ``insert_at`` on move up)."""
        return old_layer if old_layer < self.insert_at else old_layer + self.inserted

    def to_dict(self) -> dict[str, Any]:
        s, t = self.source, self.target
        return {"from_version": s.version, "to_version": t.version,
                "width": {"hidden": [s.hidden, t.hidden], "heads": [s.heads, t.heads],
                          "kv_heads": [s.kv_heads, t.kv_heads], "ffn": [s.ffn, t.ffn]},
                "depth": {"layers": [s.layers, t.layers], "insert_at": self.insert_at,
                          "inserted": self.inserted},
                "parameters": [s.param_count(), t.param_count()]}


def reachable_target(current: ModelArchitecture, candidate: ModelArchitecture) -> ModelArchitecture:
    """The smallest shape at least as large as ``candidate`` in every dimension that
    function-preserving growth reaches from ``current`` (same head size, whole query groups)."""
    group = current.heads // current.kv_heads
    heads = max(current.heads, group * math.ceil(candidate.hidden / current.head_dim / group))
    hidden = heads * current.head_dim
    if candidate.head_dim == current.head_dim:
        ffn = max(current.ffn, candidate.ffn)
    else:  # a preset with another head size (tiny): keep its own FFN ratio
        ffn = max(current.ffn, 32 * math.ceil(current.ffn * hidden / current.hidden / 32))
    widened = hidden != current.hidden
    return current.with_changes(
        hidden=hidden, heads=heads, kv_heads=heads // group, ffn=ffn,
        layers=max(current.layers, candidate.layers), version=current.version + 1,
        norm_eps=current.norm_eps * current.hidden / hidden if widened else current.norm_eps)


def capped_candidate(current: ModelArchitecture, candidate: ModelArchitecture, factor: float) -> ModelArchitecture:
    """``candidate`` cut down so one upgrade multiplies the parameters by at most ``factor``.

    The scaler sizes the model for the network's memory, which for a test model (tiny, 4 × 64)
    on machines with gigabytes is hundreds of times larger: one upgrade would then jump to a
    model no devnet trains in seconds. Depth grows first, one identity block at a time up to the
    candidate's depth (inserted blocks are exactly the identity and need no fresh random
    weights), then width by whole query groups up to the candidate's width, each step taken only
    while the cap holds. The result is always reachable by growth (``reachable_target``) and
    never smaller than ``current``; ``plan_upgrade`` still applies seed 000's 1.3× rule to it."""
    limit = factor * current.param_count()
    best = current.with_changes(version=current.version + 1)
    for layers in range(current.layers + 1, max(current.layers, candidate.layers) + 1):
        deeper = best.with_changes(layers=layers)
        if deeper.param_count() > limit:
            break
        best = deeper
    group = current.heads // current.kv_heads
    target_heads = max(current.heads, math.ceil(candidate.hidden / current.head_dim))
    heads = best.heads + group
    while heads <= target_heads:
        wider = reachable_target(current, best.with_changes(hidden=heads * current.head_dim,
                                                            heads=heads, kv_heads=heads // group))
        if wider.param_count() > limit:
            break
        best, heads = wider, heads + group
    return best


def plan_upgrade(current: ModelArchitecture, candidate: ModelArchitecture) -> GrowthPlan | None:
    """The growth plan to the reachable form of ``candidate``, or None when it is not worth it
    (below seed 000's 1.3× parameters) or not growable (INL blocks cannot be widened exactly)."""
    target = reachable_target(current, candidate)
    if not should_upgrade(current, target):
        return None
    if current.block_type == "inl" and target.hidden != current.hidden:
        target = target.with_changes(hidden=current.hidden, heads=current.heads,
                                     kv_heads=current.kv_heads, ffn=current.ffn,
                                     norm_eps=current.norm_eps)
        if not should_upgrade(current, target):
            return None
    inserted = target.layers - current.layers
    return GrowthPlan(source=current, target=target, insert_at=current.layers // 2, inserted=inserted)


# -- the signed record ------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class UpgradeRecord:
    """Version ``plan.target.version`` of the architecture, decided at ``nodes`` nodes."""

    plan: GrowthPlan
    nodes: int
    public_key: bytes
    signature: bytes

    @property
    def target(self) -> ModelArchitecture:
        return self.plan.target

    @property
    def signer(self) -> bytes:
        return hashlib.sha256(self.public_key).digest()

    def to_bytes(self) -> bytes:
        return json.dumps({"body": _body(self.plan, self.nodes), "public_key": self.public_key.hex(),
                           "signature": self.signature.hex()}, sort_keys=True).encode()


def dht_key(version: int) -> bytes:
    """Where the record that introduces ``version`` is stored in the DHT."""
    return hashlib.sha256(f"neuroshard/architecture/{version}".encode()).digest()


def _body(plan: GrowthPlan, nodes: int) -> dict[str, Any]:
    return {"record": RECORD_VERSION, "from": plan.source.to_dict(), "to": plan.target.to_dict(),
            "plan": plan.to_dict(), "nodes": nodes}


def _message(body: dict[str, Any]) -> bytes:
    return b"neuroshard-upgrade\x00" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_upgrade(key: PrivateKey, plan: GrowthPlan, nodes: int) -> UpgradeRecord:
    body = _body(plan, nodes)
    return UpgradeRecord(plan=plan, nodes=nodes, public_key=key.public_key.data, signature=key.sign(_message(body)))


def parse_upgrade(raw: bytes) -> UpgradeRecord:
    """Parse and verify a record from a peer (or the data dir); raises InvalidUpgrade."""
    if not isinstance(raw, bytes | bytearray) or len(raw) > MAX_RECORD_BYTES:
        raise InvalidUpgrade("upgrade record missing or too large")
    try:
        outer = json.loads(bytes(raw).decode("utf-8"))
        body, pub, sig = outer["body"], bytes.fromhex(outer["public_key"]), bytes.fromhex(outer["signature"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise InvalidUpgrade("upgrade record is not a signed JSON object") from None
    if not isinstance(body, dict) or len(pub) != PUBLIC_KEY_SIZE or len(sig) != SIGNATURE_SIZE:
        raise InvalidUpgrade("upgrade record has a malformed body, key or signature")
    if not verify(pub, _message(body), sig):
        raise InvalidUpgrade("upgrade record signature does not match its public key")
    if body.get("record") != RECORD_VERSION:
        raise InvalidUpgrade(f"upgrade record version {body.get('record')!r} is not {RECORD_VERSION}")
    nodes = body.get("nodes")
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise InvalidUpgrade("upgrade record node count out of range")
    try:
        source = ModelArchitecture.from_dict(body.get("from"))
        target = ModelArchitecture.from_dict(body.get("to"))
    except ValueError as exc:
        raise InvalidUpgrade(f"upgrade record architecture: {exc}") from None
    plan = plan_upgrade(source, target)
    if plan is None or plan.target != target or plan.to_dict() != body.get("plan"):
        raise InvalidUpgrade("upgrade record's shape is not the growth plan of its base architecture")
    return UpgradeRecord(plan=plan, nodes=nodes, public_key=pub, signature=sig)
