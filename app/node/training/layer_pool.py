"""DynamicLayerPool: which node holds which contiguous layers (seeds 000 and 002).

The model is cut into *stages* of contiguous layers; the driver's stage also holds the embedding,
the validator's the head (``tie_embeddings`` is False in the network, architecture.py). Every
replica of a stage holds exactly the same range, so DiLoCo cohorts are simply "the holders of a
stage" and a dead holder's micro-batch can go to any replica.

Planning (``plan``) picks the fewest stages whose size every holder can afford while keeping
``MIN_REPLICAS`` holders per stage where the network has enough nodes — fewer stages means fewer
network hops per micro-batch. Nodes are placed largest-memory first, round-robin over stages, so
every stage gets its replicas before any gets a third. The plan is a pure function of the node
list, so every node that sees the same peers computes the same assignment.

Joining (``join``) puts a newcomer on the stage with the fewest holders it can afford; healing
(``remove``) moves a spare holder (from a stage with more than MIN_REPLICAS) onto a stage that
dropped below it, and names a live replica to download the weights from. Every
``recalc_interval`` joined nodes (RECALC_EVERY_JOINS, seed 000) the architecture is re-computed
from the memory the offers report (architecture.calculate_optimal_architecture) and an upgrade is
announced when the shape growth can reach from the current one has ≥ 1.3× the parameters
(training/upgrade.py); the migration itself is migration.py's job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.node.model.architecture import MIN_REPLICAS, ModelArchitecture, calculate_optimal_architecture
from app.node.training.upgrade import GrowthPlan, capped_candidate, plan_upgrade

RECALC_EVERY_JOINS = 50
"""Seed 000: re-calculate the architecture every 50 joined nodes."""

EMBEDDING_LAYER_EQUIVALENT = 1
"""Memory the embedding (driver) or head (validator) costs, in layers: with the genesis
vocabulary (266 × hidden) it is far below one block, so one layer of headroom is generous."""


class PoolError(RuntimeError):
    """The pool cannot place nodes (no node can hold even one layer)."""


@dataclass(frozen=True)
class NodeOffer:
    node_id: str
    layers_fit: int  # whole layers of the current architecture this node's memory allows
    memory_bytes: int = 0  # the node's memory budget for the model (hardware.memory_budget_bytes)
    tier: str = "T3"


@dataclass(frozen=True)
class Assignment:
    node_id: str
    stage: int
    layer_range: tuple[int, int]
    with_embedding: bool
    with_head: bool
    download_from: str | None = None  # a live replica to copy the weights from (healing)

    @property
    def roles(self) -> tuple[str, ...]:
        roles = ["driver"] if self.with_embedding else []
        if not self.with_embedding and not self.with_head:
            roles.append("worker")
        return tuple(roles + (["validator"] if self.with_head else []))


@dataclass(frozen=True)
class UpgradeNotice:
    current: ModelArchitecture
    candidate: ModelArchitecture  # the reachable target of ``plan`` (what nodes migrate to)
    nodes: int
    plan: GrowthPlan


def stage_bounds(layers: int, stages: int) -> list[tuple[int, int]]:
    """``layers`` split into ``stages`` contiguous ranges whose sizes differ by at most one."""
    if not 1 <= stages <= layers:
        raise ValueError(f"cannot split {layers} layers into {stages} stages")
    base, extra = divmod(layers, stages)
    bounds, start = [], 0
    for s in range(stages):
        size = base + (1 if s < extra else 0)
        bounds.append((start, start + size))
        start += size
    return bounds


def _stage_cost(bounds: tuple[int, int], index: int, stages: int) -> int:
    ends = (index == 0) + (index == stages - 1)
    return bounds[1] - bounds[0] + ends * EMBEDDING_LAYER_EQUIVALENT


@dataclass
class DynamicLayerPool:
    arch: ModelArchitecture
    min_replicas: int = MIN_REPLICAS
    max_layers_per_node: int = 0  # 0 = no cap beyond memory
    bounds: list[tuple[int, int]] = field(default_factory=list)
    holders: dict[int, list[str]] = field(default_factory=dict)
    offers: dict[str, NodeOffer] = field(default_factory=dict)
    joins: int = 0  # nodes the network has had, counting this pool's joins
    last_recalc_nodes: int = 0  # node count at the last recalculation
    recalc_interval: int = RECALC_EVERY_JOINS
    max_upgrade_factor: float = 0.0  # 0 = the scaler's candidate; else one upgrade's parameter cap

    # --- planning ------------------------------------------------------------------------------
    def _fits(self, offer: NodeOffer, stage: int) -> bool:
        first, last = self.bounds[stage]
        if self.max_layers_per_node and last - first > self.max_layers_per_node:
            return False
        return _stage_cost(self.bounds[stage], stage, len(self.bounds)) <= offer.layers_fit

    def plan(self, offers: Iterable[NodeOffer]) -> list[Assignment]:
        """Assign every node from scratch (deterministic in the offers' content)."""
        nodes = sorted(offers, key=lambda o: (-o.layers_fit, o.node_id))
        if not nodes:
            raise PoolError("no nodes to plan for")
        self.offers = {o.node_id: o for o in nodes}
        if len(nodes) == 1:  # genesis: the lone node trains the whole model (seed 001, phase 1)
            self.bounds, self.holders = [(0, self.arch.layers)], {0: [nodes[0].node_id]}
            self.joins = self.last_recalc_nodes = 1
            return self.assignments()
        self.bounds = self._choose_bounds(nodes)
        self.holders = {s: [] for s in range(len(self.bounds))}
        stages = len(self.bounds)
        for i, offer in enumerate(nodes):
            order = sorted(range(stages), key=lambda s: (len(self.holders[s]), (s - i) % stages))
            target = next((s for s in order if self._fits(offer, s)), None)
            if target is not None:
                self.holders[target].append(offer.node_id)
        if any(not h for h in self.holders.values()):
            raise PoolError("the network's nodes cannot cover every layer; more memory is needed")
        self.joins = self.last_recalc_nodes = len(nodes)
        return self.assignments()

    def _choose_bounds(self, nodes: list[NodeOffer]) -> list[tuple[int, int]]:
        layers = self.arch.layers
        for stages in range(1, layers + 1):
            self.bounds = stage_bounds(layers, stages)
            replicas = min(self.min_replicas, max(1, len(nodes) // stages))
            fits = [sum(self._fits(o, s) for o in nodes) for s in range(stages)]
            if len(nodes) >= stages and min(fits) >= replicas and sum(fits) >= stages * replicas:
                return self.bounds
        raise PoolError(f"no split of {layers} layers fits the nodes' memory "
                        f"(largest offer: {nodes[0].layers_fit} layers)")

    # --- membership ----------------------------------------------------------------------------
    def adopt(self, bounds: list[tuple[int, int]], holders: dict[int, list[str]],
              registry: Iterable[NodeOffer], *, version_nodes: int = 1) -> None:
        """Take over the stages the network announces, with the offers of every node the registry
        lists, before this node joins. ``version_nodes`` is the node count at which the current
        architecture was decided (1 for genesis, else its upgrade record's): recalculations fall
        on every ``recalc_interval`` nodes from there, so the last one is the latest such point
        at or below the registry's size, and the next join that reaches the next point fires one."""
        self.bounds, self.holders = bounds, holders
        self.offers = {o.node_id: o for o in registry}
        self.joins = len(self.offers)
        base = max(1, version_nodes)
        passed = max(0, self.joins - base) // self.recalc_interval
        self.last_recalc_nodes = base + passed * self.recalc_interval

    def note_join(self, offer: NodeOffer) -> None:
        """Count a node that joined the network (placed by ``join`` or by a shared plan)."""
        if offer.node_id not in self.offers:
            self.joins += 1
        self.offers[offer.node_id] = offer

    def join(self, offer: NodeOffer) -> Assignment | None:
        """Place a newcomer on the least-replicated stage it fits; None if it fits none."""
        if not self.bounds:
            return self.plan([offer])[0]
        self.note_join(offer)
        fitting = [s for s in range(len(self.bounds)) if self._fits(offer, s)]
        if not fitting:
            return None
        target = min(fitting, key=lambda s: (len(self.holders[s]), s))
        source = self.holders[target][0] if self.holders[target] else None
        self.holders[target].append(offer.node_id)
        return self._assignment(offer.node_id, target, download_from=source)

    def remove(self, node_id: str) -> list[Assignment]:
        """A holder's heartbeat stopped: drop it and heal stages below MIN_REPLICAS.

        Returns the new assignments (moved nodes, each with a live replica to download from)."""
        self.offers.pop(node_id, None)
        for holders in self.holders.values():
            if node_id in holders:
                holders.remove(node_id)
        return self.heal()

    def heal(self) -> list[Assignment]:
        """Move spare holders (from stages above MIN_REPLICAS) onto stages below their target.

        Deterministic in the pool's content, so every node that sees the same holders computes the
        same moves and only the named node acts. Each move names a live replica to download from."""
        moves = []
        for stage in sorted(self.holders, key=lambda s: (len(self.holders[s]), s)):
            while len(self.holders[stage]) < self._target_replicas():
                donor = self._spare_holder(stage)
                if donor is None:
                    break
                self.holders[self.stage_of(donor)].remove(donor)
                source = self.holders[stage][0] if self.holders[stage] else None
                self.holders[stage].append(donor)
                moves.append(self._assignment(donor, stage, download_from=source))
        return moves

    def _target_replicas(self) -> int:
        return min(self.min_replicas, max(1, len(self.offers) // max(1, len(self.bounds))))

    def _spare_holder(self, needy: int) -> str | None:
        """A holder from the most-replicated stage with more than MIN_REPLICAS that fits ``needy``."""
        for stage in sorted(self.holders, key=lambda s: -len(self.holders[s])):
            if stage == needy or len(self.holders[stage]) <= self.min_replicas:
                continue
            for node in sorted(self.holders[stage], reverse=True):
                if node in self.offers and self._fits(self.offers[node], needy):
                    return node
        return None

    # --- views ---------------------------------------------------------------------------------
    def stage_of(self, node_id: str) -> int:
        for stage, holders in self.holders.items():
            if node_id in holders:
                return stage
        raise KeyError(f"{node_id} holds no stage")

    def _assignment(self, node_id: str, stage: int, download_from: str | None = None) -> Assignment:
        first, last = self.bounds[stage]
        return Assignment(node_id, stage, (first, last), stage == 0, stage == len(self.bounds) - 1,
                          download_from)

    def assignments(self) -> list[Assignment]:
        return [self._assignment(n, s) for s, holders in sorted(self.holders.items()) for n in holders]

    def replicas_per_stage(self) -> tuple[int, ...]:
        return tuple(len(self.holders[s]) for s in sorted(self.holders))

    # --- architecture ----------------------------------------------------------------------------
    def check_upgrade(self, *, force: bool = False) -> UpgradeNotice | None:
        """Every ``recalc_interval`` joins (or when ``force``d, a devnet's ``--upgrade-at``): the
        architecture the network's memory now affords, announced only when the shape growth can
        reach has ≥ 1.3× the parameters (seed 000)."""
        if not force and self.joins - self.last_recalc_nodes < self.recalc_interval:
            return None
        self.last_recalc_nodes = self.joins
        return self.recalculate()

    def recalculate(self) -> UpgradeNotice | None:
        """The upgrade the offers' memory affords now, or None (pure in the pool's content)."""
        nodes = len(self.offers)
        memory = sum(o.memory_bytes for o in self.offers.values())
        if memory <= 0:
            return None
        candidate = calculate_optimal_architecture(memory, nodes=nodes, vocab=self.arch.vocab,
                                                   max_seq=self.arch.max_seq, version=self.arch.version + 1,
                                                   block_type=self.arch.block_type,
                                                   embedding_rank=self.arch.embedding_rank)
        if self.max_upgrade_factor > 0:
            candidate = capped_candidate(self.arch, candidate, self.max_upgrade_factor)
        plan = plan_upgrade(self.arch, candidate)
        if plan is None:
            return None
        return UpgradeNotice(self.arch, plan.target, nodes, plan)


def layers_fit_for(memory_bytes: int, arch: ModelArchitecture) -> int:
    """Whole layers of ``arch`` a node can train in ``memory_bytes``."""
    return max(0, math.floor(memory_bytes / arch.train_bytes_per_layer()))
