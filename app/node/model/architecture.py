"""The shape of NeuroLLM and how it scales with the memory the network offers.

Seed 000 asks for width ∝ memory^0.6 and depth ∝ memory^0.4. Parameters of a decoder grow as
layers × hidden², so those exponents would need parameters ∝ memory^1.6, which memory cannot
pay for. DESIGN.md §3 resolves it: derive a parameter budget ``P`` from memory, then set
``hidden ∝ P^0.375`` and ``layers ∝ P^0.25`` (the seed's exponents divided by 1.6). Then
``layers × hidden² ∝ P`` exactly, and width still grows 1.5× faster than depth in log terms.
The scale is anchored at 1 node with 2 GB -> 11 layers × 512 hidden (seed 000's first row).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from app.node.schema import STRICT, parse

GIB = 1024**3

BYTES_PER_TRAINED_PARAM = 36
"""Bytes one trained parameter costs on a volunteer machine, in float32.

weights 4 + gradient 4 + AdamW first and second moments 8 (inner optimiser) + DiLoCo anchor
copy 4 + DiLoCo outer Nesterov momentum 4 (DiLoCo paper, DESIGN.md §4) = 24 bytes of state,
times 1.5 of headroom for activations, temporary buffers and allocator fragmentation = 36.
"""

USABLE_MEMORY_FRACTION = 0.6
"""Share of a node's reported memory the model may take; the OS, Python, torch itself (~220 MB,
PLATFORM.md), the data loader and the GUI keep the rest."""

MIN_REPLICAS = 2
"""Every layer is held by two nodes once there are two (seed 002, DESIGN.md §4), so a network
of N nodes stores each parameter twice and its budget halves."""

UPGRADE_FACTOR = 1.3
"""Seed 000: move to a new architecture only when it has at least 1.3× the parameters."""

ANCHOR_MEMORY_BYTES = 2 * GIB
ANCHOR_HIDDEN = 512
ANCHOR_LAYERS = 11
WIDTH_EXPONENT = 0.375  # 0.6 / 1.6
DEPTH_EXPONENT = 0.25  # 0.4 / 1.6
FFN_MULTIPLE = 256
HEAD_DIM = 64
"""Kept at 64 at every scale (GPT-2/GPT-3 small sizes use 64): rotary frequencies depend on the
head size, so a model can only be widened without changing its function while the head size
stays fixed; width grows by adding heads, and every architecture the scaler picks is reachable
from genesis by growth (DESIGN.md §3: keep what was learned)."""
GQA_GROUP = 4
"""Query heads per key/value head at scale (LLaMA-2 70B uses 8; 4 keeps small models sane)."""

GENESIS_VOCAB = 266
"""256 byte tokens + 10 special tokens (seed 001, DESIGN.md §3)."""

BLOCK_TYPES = ("transformer", "inl")
"""``transformer``: attention then SwiGLU (seed 002). ``inl``: seed 003's integrator neuron layer,
attention's output driving second-order dynamics that iterate inside the block (model/inl.py)."""

INL_CONTROLLER_HIDDEN = 64
"""Hidden units of the INL controller (seed 003's reference implementation)."""


@dataclass(frozen=True, kw_only=True)
class ModelArchitecture:
    """Every number that fixes a NeuroLLM's tensor shapes, plus its network-wide version.

    ``tie_embeddings`` defaults to False: in the network the embedding lives on the driver and
    the head on the validator, two different machines, so a tied matrix would have to be kept
    in sync across them every step. Untied costs ``vocab × hidden`` parameters, small while the
    vocabulary is small (DESIGN.md §3).
    """

    __pydantic_config__ = STRICT
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    max_seq: int
    version: int = 1
    tie_embeddings: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    block_type: str = "transformer"
    embedding_rank: int = 0
    """0: full embedding and head. r > 0: both factorised through rank r (seed 003's low-rank
    embeddings; it suggests max(64, hidden / 8)): a shape, so the whole network agrees on it."""
    inl_iterations: int = 10
    """Integration steps of an INL block (seed 003: 5-15; its inference statistics count against a
    maximum of 10). Only read when ``block_type`` is "inl"."""

    def __post_init__(self) -> None:
        problems = _validate(self)
        if problems:
            raise ValueError("invalid ModelArchitecture: " + "; ".join(problems))

    # -- presets -------------------------------------------------------------------------------
    @classmethod
    def tiny(cls) -> ModelArchitecture:
        """A model that trains a step in milliseconds on a laptop CPU, for tests and devnets."""
        return cls(hidden=64, layers=4, heads=4, kv_heads=2, head_dim=16, ffn=256,
                   vocab=GENESIS_VOCAB, max_seq=64)

    @classmethod
    def genesis(cls) -> ModelArchitecture:
        """The architecture a solo genesis node (1 node, 2 GB) starts with: 11 × 512."""
        return calculate_optimal_architecture(ANCHOR_MEMORY_BYTES, nodes=1, vocab=GENESIS_VOCAB)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> ModelArchitecture:
        """Parse an architecture from untrusted input (a checkpoint, a peer, a config) through the
        config schema (app/node/schema.py); raises ValueError saying what is wrong. A new field
        is one line above, with its default; the rules across fields stay in ``_validate``."""
        if not isinstance(d, dict):
            raise ValueError(f"architecture must be a mapping, got {type(d).__name__}")
        return parse(cls, d, noun="architecture field")

    # -- sizes ---------------------------------------------------------------------------------
    def layer_param_count(self) -> int:
        """Parameters of one block: attention and two RMSNorm weights, then a SwiGLU FFN
        (transformer) or the integrator and a GELU FFN (inl, model/inl.py)."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        q_out = self.heads * self.head_dim
        attention = h * q_out + 2 * h * kv + q_out * h
        if self.block_type == "inl":
            c = INL_CONTROLLER_HIDDEN
            controller = 3 * h * c + c + c * 4 * h + 4 * h  # reads (h, x, v); writes 4 controls
            integrator = controller + 2 * h + h * h  # mu, phi, output projection
            return attention + integrator + 2 * h * self.ffn + 2 * h
        return attention + 3 * h * self.ffn + 2 * h

    def embedding_param_count(self) -> int:
        r = self.embedding_rank
        return self.vocab * r + r * self.hidden if r else self.vocab * self.hidden

    def head_param_count(self) -> int:
        """Final norm plus LM head (the head matrix is free when tied to the embedding)."""
        if self.tie_embeddings:
            return self.hidden + self.hidden * self.embedding_rank
        return self.hidden + self.embedding_param_count()

    def param_count(self) -> int:
        return (self.layers * self.layer_param_count() + self.embedding_param_count()
                + self.head_param_count())

    def train_bytes_per_layer(self) -> int:
        """Memory one node needs to train one block (see BYTES_PER_TRAINED_PARAM)."""
        return self.layer_param_count() * BYTES_PER_TRAINED_PARAM

    def with_changes(self, **changes: Any) -> ModelArchitecture:
        return replace(self, **changes)


def _validate(a: ModelArchitecture) -> list[str]:
    problems = []
    for name in ("hidden", "layers", "heads", "kv_heads", "head_dim", "ffn", "vocab", "max_seq",
                 "version", "inl_iterations"):
        value = getattr(a, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{name} must be a positive integer, got {value!r}")
    if problems:
        return problems
    if a.heads * a.head_dim != a.hidden:
        problems.append(f"heads × head_dim ({a.heads} × {a.head_dim}) must equal hidden {a.hidden}")
    if a.heads % a.kv_heads:
        problems.append(f"heads {a.heads} must be a multiple of kv_heads {a.kv_heads}")
    if a.head_dim % 2:
        problems.append(f"head_dim {a.head_dim} must be even for rotary embeddings")
    if not (a.rope_theta > 0 and 0 < a.norm_eps < 1):
        problems.append("rope_theta must be > 0 and norm_eps in (0, 1)")
    if a.block_type not in BLOCK_TYPES:
        problems.append(f"block_type must be one of {', '.join(BLOCK_TYPES)}, got {a.block_type!r}")
    if not (isinstance(a.embedding_rank, int) and 0 <= a.embedding_rank < a.hidden):
        problems.append(f"embedding_rank must be 0 (full) or below hidden {a.hidden}, got {a.embedding_rank!r}")
    if a.inl_iterations > 64:
        problems.append(f"inl_iterations must be at most 64, got {a.inl_iterations}")
    return problems


def parameter_budget(total_memory_bytes: int, nodes: int = 1) -> float:
    """Parameters the network can train: usable memory over replicas and per-parameter cost."""
    if total_memory_bytes <= 0 or nodes < 1:
        raise ValueError("total memory must be positive and nodes at least 1")
    replicas = MIN_REPLICAS if nodes >= MIN_REPLICAS else 1
    return total_memory_bytes * USABLE_MEMORY_FRACTION / replicas / BYTES_PER_TRAINED_PARAM


def calculate_optimal_architecture(total_memory_bytes: int, *, nodes: int = 1,
                                   vocab: int = GENESIS_VOCAB, max_seq: int = 1024,
                                   version: int = 1, tie_embeddings: bool = False,
                                   block_type: str = "transformer", embedding_rank: int = 0) -> ModelArchitecture:
    """The architecture that fits the network's memory (DESIGN.md §3, see the module docstring).

    ``scale = P / P_anchor`` where ``P_anchor`` is the budget of 1 node with 2 GB, so the anchor
    lands exactly on 11 × 512. Hidden is rounded to whole heads of HEAD_DIM (a multiple of
    GQA_GROUP heads from 8 heads up), FFN to SwiGLU's 8/3 × hidden rounded up to 256.
    """
    scale = parameter_budget(total_memory_bytes, nodes) / parameter_budget(ANCHOR_MEMORY_BYTES, 1)
    raw_hidden = ANCHOR_HIDDEN * scale**WIDTH_EXPONENT
    heads = _round_heads(raw_hidden / HEAD_DIM)
    hidden = heads * HEAD_DIM
    layers = max(2, round(ANCHOR_LAYERS * scale**DEPTH_EXPONENT))
    ffn = FFN_MULTIPLE * math.ceil(8 * hidden / 3 / FFN_MULTIPLE)
    return ModelArchitecture(hidden=hidden, layers=layers, heads=heads, kv_heads=_kv_heads(heads),
                             head_dim=HEAD_DIM, ffn=ffn, vocab=vocab, max_seq=max_seq,
                             version=version, tie_embeddings=tie_embeddings, block_type=block_type,
                             embedding_rank=embedding_rank)


def _round_heads(raw_heads: float) -> int:
    """Head count: even below 8, else a multiple of GQA_GROUP so key/value heads divide it
    evenly (a prime head count would leave a single key/value head)."""
    if raw_heads < 2 * GQA_GROUP:
        return max(2, 2 * round(raw_heads / 2))
    return GQA_GROUP * round(raw_heads / GQA_GROUP)


def _kv_heads(heads: int) -> int:
    """Key/value heads for grouped-query attention: heads / GQA_GROUP, or heads / 2 when small."""
    return heads // GQA_GROUP if heads % GQA_GROUP == 0 and heads >= 2 * GQA_GROUP else max(1, heads // 2)


def should_upgrade(current: ModelArchitecture, candidate: ModelArchitecture,
                   min_improvement: float = UPGRADE_FACTOR) -> bool:
    """Seed 000's rule: upgrade only when the candidate has ≥ 1.3× the current parameters."""
    return candidate.param_count() >= min_improvement * current.param_count()
