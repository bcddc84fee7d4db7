"""The building blocks of NeuroLLM, in reading order (seed 002: RMSNorm, RoPE, GQA, SwiGLU).

A decoder block is pre-norm: ``x + attn(norm(x))`` then ``x + ffn(norm(x))``. The embedding
and head stages are separate modules because, in the network, they live on different nodes
(the driver and the validator).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from app.node.model.architecture import ModelArchitecture

INIT_STD = 0.02
"""GPT-2 / nanoGPT initialisation; residual output projections get INIT_STD / sqrt(2 × layers)
so the residual stream's variance does not grow with depth (GPT-2 paper, §2.3)."""


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): no mean subtraction, no bias."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 even under bf16 autocast: the mean of squares underflows in bf16.
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).type_as(x)


def rope_tables(head_dim: int, max_seq: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos and sin tables [max_seq, head_dim / 2] for rotary embeddings (Su et al. 2021)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_seq, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of x [B, H, T, D] by the position's angles."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.type_as(x)


class LayerCache:
    """Keys and values one attention layer has seen, for incremental decoding.

    They live in a buffer with room to spare, grown geometrically (at least doubled) when full, so
    a decode step writes its one position in place instead of copying the whole cache: appending
    n positions one at a time copies O(n) elements in all, where concatenating copied O(n^2).
    Growth stops at ``max_positions`` (the model's max_seq), so a full cache is never larger than
    the session's positions need. ``keys``/``values`` are views of the filled part."""

    MIN_CAPACITY = 16

    def __init__(self, max_positions: int | None = None) -> None:
        self.max_positions = max_positions
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self._length = 0

    @property
    def length(self) -> int:
        return self._length

    @property
    def capacity(self) -> int:
        return 0 if self._keys is None else self._keys.shape[2]

    @property
    def keys(self) -> torch.Tensor | None:
        return None if self._keys is None else self._keys[:, :, :self._length]

    @property
    def values(self) -> torch.Tensor | None:
        return None if self._values is None else self._values[:, :, :self._length]

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append positions k, v [B, H, T, D]; returns every key and value cached so far."""
        need = self._length + k.shape[2]
        if self._keys is None or self._values is None or need > self._keys.shape[2]:
            wanted = max(2 * self.capacity, self.MIN_CAPACITY)
            self._grow(k, v, max(need, min(wanted, self.max_positions or wanted)))
        assert self._keys is not None and self._values is not None
        self._keys[:, :, self._length:need] = k
        self._values[:, :, self._length:need] = v
        self._length = need
        return self._keys[:, :, :need], self._values[:, :, :need]

    def _grow(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> None:
        keys = k.new_empty((*k.shape[:2], capacity, k.shape[3]))
        values = v.new_empty((*v.shape[:2], capacity, v.shape[3]))
        if self._keys is not None and self._values is not None:
            keys[:, :, :self._length] = self._keys[:, :, :self._length]
            values[:, :, :self._length] = self._values[:, :, :self._length]
        self._keys, self._values = keys, values


class Attention(nn.Module):
    """Causal grouped-query attention (Ainslie et al. 2023) through PyTorch's SDPA kernels."""

    def __init__(self, arch: ModelArchitecture) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = arch.heads, arch.kv_heads, arch.head_dim
        self.q_proj = nn.Linear(arch.hidden, arch.heads * arch.head_dim, bias=False)
        self.k_proj = nn.Linear(arch.hidden, arch.kv_heads * arch.head_dim, bias=False)
        self.v_proj = nn.Linear(arch.hidden, arch.kv_heads * arch.head_dim, bias=False)
        self.o_proj = nn.Linear(arch.heads * arch.head_dim, arch.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: LayerCache | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.extend(k, v)
        out = _causal_attention(q, k, v, past)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
    """SDPA with the right causal mask when ``past`` cached positions precede the queries.

    SDPA's ``is_causal`` aligns the mask to the top-left corner, which is right only without a
    cache; one new token may see everything; a chunk after a cache needs an explicit mask.
    """
    t = q.shape[2]
    if past == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, enable_gqa=True)
    if t == 1:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    total = k.shape[2]
    mask = torch.ones(t, total, dtype=torch.bool, device=q.device).tril(diagonal=past)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


class SwiGLU(nn.Module):
    """Gated feed-forward ``down(silu(gate(x)) * up(x))`` (Shazeer 2020)."""

    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, ffn, bias=False)
        self.up_proj = nn.Linear(hidden, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderBlock(nn.Module):
    """Pre-norm transformer block: attention then SwiGLU, each added to the residual stream."""

    def __init__(self, arch: ModelArchitecture) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(arch.hidden, arch.norm_eps)
        self.attn = Attention(arch)
        self.ffn_norm = RMSNorm(arch.hidden, arch.norm_eps)
        self.ffn = SwiGLU(arch.hidden, arch.ffn)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache)
        return x + self.ffn(self.ffn_norm(x))

    def output_projections(self) -> tuple[nn.Linear, nn.Linear]:
        """The two matrices that write into the residual stream (zeroed for identity growth)."""
        return self.attn.o_proj, self.ffn.down_proj

    def init_weights(self, layers: int) -> None:
        for lin in (self.attn.q_proj, self.attn.k_proj, self.attn.v_proj, self.ffn.gate_proj,
                    self.ffn.up_proj):
            nn.init.normal_(lin.weight, std=INIT_STD)
        for lin in self.output_projections():
            nn.init.normal_(lin.weight, std=INIT_STD / math.sqrt(2 * layers))
        nn.init.ones_(self.attn_norm.weight)
        nn.init.ones_(self.ffn_norm.weight)


class TokenEmbedding(nn.Module):
    """Token ids -> hidden states; optionally factorised as vocab×r then r×hidden (seed 003,
    level 1 'low-rank embeddings'), which saves (vocab − r)·hidden − r·vocab parameters when
    the vocabulary is large."""

    def __init__(self, vocab: int, hidden: int, low_rank: int | None = None) -> None:
        super().__init__()
        self.low_rank = low_rank
        self.table = nn.Embedding(vocab, low_rank or hidden)
        self.proj = nn.Linear(low_rank, hidden, bias=False) if low_rank else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.table(ids)
        return self.proj(x) if self.proj is not None else x

    def init_weights(self) -> None:
        nn.init.normal_(self.table.weight, std=INIT_STD)
        if self.proj is not None:
            nn.init.normal_(self.proj.weight, std=1.0 / math.sqrt(self.proj.in_features))


class LMHead(nn.Module):
    """Final RMSNorm and the projection to vocabulary logits, optionally low-rank or tied.

    When tied, ``tied_to`` is the embedding whose table is reused as the output matrix; that
    only makes sense when embedding and head live in the same module (the whole model).
    """

    def __init__(self, arch: ModelArchitecture, low_rank: int | None = None,
                 tied_to: TokenEmbedding | None = None) -> None:
        super().__init__()
        self.norm = RMSNorm(arch.hidden, arch.norm_eps)
        self.low_rank = low_rank
        self.down = nn.Linear(arch.hidden, low_rank, bias=False) if low_rank else None
        self.out = nn.Linear(low_rank or arch.hidden, arch.vocab, bias=False)
        if tied_to is not None:
            if tied_to.table.weight.shape != self.out.weight.shape:
                raise ValueError("tied embeddings need the same low-rank setting on both ends")
            self.out.weight = tied_to.table.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.down is not None:
            x = self.down(x)
        return self.out(x)

    def init_weights(self) -> None:
        nn.init.ones_(self.norm.weight)
        if self.down is not None:
            nn.init.normal_(self.down.weight, std=1.0 / math.sqrt(self.down.in_features))
        nn.init.normal_(self.out.weight, std=INIT_STD)
