"""A contiguous slice of NeuroLLM: some decoder blocks, plus the embedding and/or the head.

One class serves every pipeline stage (as torchtitan does), and every block type (a transformer
block or seed 003's INL block, ``ModelArchitecture.block_type``): the driver's shard has the
embedding, the validator's the head, workers only blocks, and ``ModelShard.full`` is the whole
model. Blocks are keyed by their GLOBAL layer index, so a shard's ``state_dict`` is exactly the
matching subset of the whole model's, and checkpoints and layer transfers need no renaming.

Chaining shards with ``.detach().requires_grad_()`` at the boundaries and back-propagating the
received gradient gives the same loss and gradients as the whole model (tests/model).
Precision, compilation and activation checkpointing are not the shard's business: training
applies them from outside (app/node/training/speed.py), as torchtitan's ``parallelize`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from app.node.model.architecture import ModelArchitecture
from app.node.model.inl import INLBlock, IntegratorNeuronLayer
from app.node.model.layers import DecoderBlock, LayerCache, LMHead, TokenEmbedding, rope_tables

Block = DecoderBlock | INLBlock
BLOCK_CLASSES: dict[str, type[Block]] = {"transformer": DecoderBlock, "inl": INLBlock}
"""The block each ``ModelArchitecture.block_type`` names; every shard of a model uses one kind."""

PAD_ID = 256
"""Id of ``<pad>``: the first special token after the 256 byte tokens (app/node/tokenizer.py
uses the same layout; a test pins that they agree)."""


class ShardInputError(ValueError):
    """A shard was given input of the wrong kind, shape or length."""


@dataclass
class ShardCache:
    """Per-layer key/value caches of one shard plus how many positions they hold."""

    layers: dict[int, LayerCache] = field(default_factory=dict)
    position: int = 0


class ModelShard(nn.Module):
    """Global blocks [first_layer, last_layer), with the embedding and/or head when asked."""

    def __init__(self, arch: ModelArchitecture, first_layer: int, last_layer: int, *,
                 with_embedding: bool, with_head: bool, low_rank: int | None = None) -> None:
        super().__init__()
        if low_rank is None:  # the architecture's own rank unless a caller asks for another
            low_rank = arch.embedding_rank or None
        _check_shard_args(arch, first_layer, last_layer, with_embedding, with_head, low_rank)
        self._arch = arch
        self._range = (first_layer, last_layer)
        self.low_rank = low_rank
        self.embedding = TokenEmbedding(arch.vocab, arch.hidden, low_rank) if with_embedding else None
        block_class = BLOCK_CLASSES[arch.block_type]
        self.blocks = nn.ModuleDict({str(i): block_class(arch) for i in range(first_layer, last_layer)})
        tied = self.embedding if arch.tie_embeddings else None
        self.head = LMHead(arch, low_rank, tied_to=tied) if with_head else None
        cos, sin = rope_tables(arch.head_dim, arch.max_seq, arch.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    @classmethod
    def full(cls, arch: ModelArchitecture, *, low_rank: int | None = None) -> ModelShard:
        """The whole model: every block, the embedding and the head."""
        return cls(arch, 0, arch.layers, with_embedding=True, with_head=True, low_rank=low_rank)

    def init_weights(self) -> None:
        if self.embedding is not None:
            self.embedding.init_weights()
        if self.head is not None and not self._arch.tie_embeddings:
            self.head.init_weights()
        for block in self.blocks.values():
            block.init_weights(self._arch.layers)

    # -- identity --------------------------------------------------------------------------------
    @property
    def architecture(self) -> ModelArchitecture:
        return self._arch

    @property
    def layer_range(self) -> tuple[int, int]:
        return self._range

    @property
    def with_embedding(self) -> bool:
        return self.embedding is not None

    @property
    def with_head(self) -> bool:
        return self.head is not None

    def block(self, layer: int) -> Block:
        """The block at GLOBAL index ``layer``; KeyError naming the range if not held here."""
        key = str(layer)
        if key not in self.blocks:
            raise KeyError(f"layer {layer} is not in this shard (holds {self._range[0]}..{self._range[1] - 1})")
        return self.blocks[key]  # type: ignore[return-value]

    def layer_state_dict(self, layer: int) -> dict[str, torch.Tensor]:
        """Parameters of one block by global index, names relative to the block."""
        return {k: v.detach() for k, v in self.block(layer).state_dict().items()}

    def load_layer_state_dict(self, layer: int, state: dict[str, torch.Tensor]) -> None:
        """Replace one block's weights; ValueError naming the first mismatch on bad input."""
        own = self.block(layer).state_dict()
        if set(state) != set(own):
            raise ValueError(f"layer {layer}: expected keys {sorted(own)}, got {sorted(state)}")
        for name, tensor in state.items():
            if not isinstance(tensor, torch.Tensor) or tensor.shape != own[name].shape:
                got = getattr(tensor, "shape", type(tensor).__name__)
                raise ValueError(f"layer {layer}: {name} must have shape {tuple(own[name].shape)}, got {got}")
        with torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor)

    # -- INL inference (seed 003's adaptive early stopping) ---------------------------------------
    def integrators(self) -> dict[int, IntegratorNeuronLayer]:
        """The integrator of every INL block held here, by global layer (empty for transformers)."""
        return {int(k): b.inl for k, b in self.blocks.items() if isinstance(b, INLBlock)}

    @contextlib.contextmanager
    def adaptive_stopping(self, enabled: bool) -> Iterator[None]:
        """Within the block, INL blocks stop iterating early at inference (or never, when not
        enabled); the previous setting is restored after."""
        layers = list(self.integrators().values())
        before = [inl.adaptive_stop for inl in layers]
        for inl in layers:
            inl.adaptive_stop = enabled
        try:
            yield
        finally:
            for inl, was in zip(layers, before, strict=True):
                inl.adaptive_stop = was

    def get_inference_stats(self) -> dict[int, float]:
        """Mean integration steps per forward of each INL layer at inference (seed 003's
        ``get_inference_stats``), for layers that ran since the last reset."""
        stats = {layer: inl.mean_inference_iterations() for layer, inl in self.integrators().items()}
        return {layer: mean for layer, mean in stats.items() if mean is not None}

    def reset_inference_stats(self) -> None:
        for inl in self.integrators().values():
            inl.reset_inference_stats()

    # -- compute ---------------------------------------------------------------------------------
    def new_cache(self) -> ShardCache:
        return ShardCache(layers={i: LayerCache(self.architecture.max_seq) for i in range(*self._range)})

    def forward(self, x: torch.Tensor, cache: ShardCache | None = None) -> torch.Tensor:
        """Token ids [B, T] (with embedding) or hidden states [B, T, hidden] -> hidden states,
        or logits [B, T, vocab] when this shard holds the head."""
        start = cache.position if cache is not None else 0
        t = self._check_input(x, start)
        h = self.embedding(x) if self.embedding is not None else x
        cos, sin = self.rope_cos[start:start + t], self.rope_sin[start:start + t]
        for key, block in self.blocks.items():
            h = block(h, cos, sin, cache.layers[int(key)] if cache is not None else None)
        if cache is not None:
            cache.position += t
        return self.head(h) if self.head is not None else h

    def _check_input(self, x: torch.Tensor, start: int) -> int:
        if self.embedding is not None:
            if x.dim() != 2 or x.dtype != torch.long:
                raise ShardInputError(f"the first stage takes token ids LongTensor [B, T], got {x.dtype} {tuple(x.shape)}")
        elif x.dim() != 3 or x.shape[-1] != self._arch.hidden or not x.is_floating_point():
            raise ShardInputError(f"this stage takes hidden states [B, T, {self._arch.hidden}], got {x.dtype} {tuple(x.shape)}")
        t = x.shape[1]
        if t < 1 or start + t > self._arch.max_seq:
            raise ShardInputError(f"sequence positions {start}..{start + t} exceed max_seq {self._arch.max_seq}")
        return t


def _check_shard_args(arch: ModelArchitecture, first: int, last: int, with_embedding: bool,
                      with_head: bool, low_rank: int | None) -> None:
    if not 0 <= first <= last <= arch.layers:
        raise ValueError(f"layer range [{first}, {last}) is outside the model's 0..{arch.layers}")
    if first == last and not (with_embedding or with_head):
        raise ValueError("a shard must hold at least one block, the embedding or the head")
    if low_rank is not None and not 0 < low_rank < arch.hidden:
        raise ValueError(f"low_rank must be between 1 and hidden - 1 ({arch.hidden - 1}), got {low_rank}")
    if arch.tie_embeddings and with_embedding != with_head:
        raise ValueError("tied embeddings need the embedding and the head in the same shard; "
                         "use tie_embeddings=False for a pipeline split across nodes")


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = PAD_ID) -> torch.Tensor:
    """Mean next-token cross-entropy over non-pad targets, computed in float32."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=ignore_index)
