"""Growing a trained model without forgetting what it learned (seed 004, DESIGN.md §3).

Each growth returns a NEW ``ModelShard`` whose parameters are new tensor objects: an optimiser
built on the old model must be rebuilt (or its state remapped) from ``new.parameters()``.
Arbor found regrown parameters by name and so never trained them (DESIGN.md §4): track
parameters by object.

Function preservation, for each kind of growth:

* depth: new blocks copy a neighbour's weights (seed 004: "initialise from neighbouring
  layers") but their two output projections (attention ``o_proj``, FFN ``down_proj``) are
  zero, so each new block adds nothing to the residual stream and is exactly the identity.
  Gradients still reach the zeroed matrices, because their inputs are not zero.
* width: the residual stream gains channels that start at zero everywhere: new embedding
  columns and new rows of every output projection are zero. RMSNorm then sees
  ``mean' = mean · H / H'``, which would scale the normalised old channels by ``sqrt(H'/H)``;
  the norm weights are multiplied by ``sqrt(H / H')`` and ``norm_eps`` by ``H / H'`` so that
  ``w' · x / sqrt(mean' + eps') = w · x / sqrt(mean + eps)`` exactly. New heads and FFN
  channels read the stream through fresh random weights but write through zero columns.
  Heads keep their key/value group, so old query heads still read their own key/value head.
* INL blocks (seed 003) grow in depth like transformer blocks (their output projection and FFN
  down-projection are zeroed) and in vocabulary; they cannot be widened exactly (grow_width).
* vocabulary: embedding and head gain rows; old tokens' logits are untouched (a logit is one
  head row times the hidden state, so new rows change no other logit; only the softmax shares
  some mass with the new tokens). ``grow_vocab_in_place`` does this for a running stage: it
  replaces the tensors *inside* the existing Parameter objects, so an optimiser or DiLoCo
  replica that tracks parameters by object keeps tracking them (their per-row state must be
  padded by the caller: app/node/training/vocab_growth.py). It keeps the architecture version:
  a vocabulary is named by its tokenizer hash, which stage requests carry, while the version
  counts the size upgrades the planner negotiates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from app.node.model.architecture import ModelArchitecture
from app.node.model.layers import INIT_STD
from app.node.model.shard import ModelShard


class GrowthError(ValueError):
    """A requested growth is impossible (shrinking, mismatched head size, wrong shard)."""


def _rebuild(model: ModelShard, arch: ModelArchitecture, first: int, last: int) -> ModelShard:
    new = ModelShard(arch, first, last, with_embedding=model.with_embedding,
                     with_head=model.with_head, low_rank=model.low_rank)
    first_param = next(model.parameters(), None)
    if first_param is not None:
        new = new.to(device=first_param.device, dtype=first_param.dtype)
    return new.train(model.training)


# -- depth ----------------------------------------------------------------------------------------
def grow_depth(model: ModelShard, n: int, position: str | int = "middle") -> ModelShard:
    """Insert ``n`` identity blocks before global layer ``position`` ("middle" = layers // 2).

    The shard must hold the insertion point (first <= position <= last); blocks after it move
    up by ``n``. Other shards of the same model whose layers follow ``position`` must be
    renumbered by the caller (the layer pool reassigns layers after an upgrade anyway).
    """
    arch = model.architecture
    first, last = model.layer_range
    pos = arch.layers // 2 if position == "middle" else position
    if not isinstance(pos, int) or isinstance(pos, bool):
        raise GrowthError(f"position must be 'middle' or a layer index, got {position!r}")
    if n < 1:
        raise GrowthError(f"can only add a positive number of layers, got {n}")
    if not first <= pos <= last:
        raise GrowthError(f"insertion point {pos} is outside this shard's layers [{first}, {last})")
    new = _rebuild(model, arch.with_changes(layers=arch.layers + n, version=arch.version + 1),
                   first, last + n)
    with torch.no_grad():
        _copy_ends(model, new)
        for i in range(first, last):
            new.block(i if i < pos else i + n).load_state_dict(model.block(i).state_dict())
        donor = pos - 1 if pos - 1 >= first else pos
        for i in range(pos, pos + n):
            if first < last:
                new.block(i).load_state_dict(model.block(donor).state_dict())
            for proj in new.block(i).output_projections():
                proj.weight.zero_()
    return new


def _copy_ends(old: ModelShard, new: ModelShard) -> None:
    if old.embedding is not None and new.embedding is not None:
        new.embedding.load_state_dict(old.embedding.state_dict())
    if old.head is not None and new.head is not None:
        new.head.load_state_dict(old.head.state_dict())


# -- width ----------------------------------------------------------------------------------------
def grow_width(model: ModelShard, new_hidden: int, new_ffn: int, new_heads: int) -> ModelShard:
    """Widen hidden size, FFN size and head count so the logits do not change (module doc)."""
    arch = model.architecture
    if arch.block_type == "inl":
        # The integrator's inertia reads the norm of the whole state (alpha = alpha_base ·
        # exp(−κ‖e‖)), and new channels are driven by the excitation from the first step, so
        # new channels would change what old ones compute: there is no exact widening.
        raise GrowthError("INL blocks cannot be widened without changing the model's function; "
                          "grow depth or vocabulary, or distil into a wider model")
    new_arch = _widened_arch(arch, new_hidden, new_ffn, new_heads)
    new = _rebuild(model, new_arch, *model.layer_range)
    scale = math.sqrt(arch.hidden / new_hidden)
    with torch.no_grad():
        if model.embedding is not None and new.embedding is not None:
            _widen_embedding(model, new)
        for i in range(*model.layer_range):
            _widen_block(model.block(i), new.block(i), scale)
        if model.head is not None and new.head is not None:
            _widen_head(model, new, scale)
    return new


def _widened_arch(arch: ModelArchitecture, hidden: int, ffn: int, heads: int) -> ModelArchitecture:
    if hidden < arch.hidden or ffn < arch.ffn or heads < arch.heads:
        raise GrowthError(f"width can only grow: hidden {arch.hidden}->{hidden}, ffn {arch.ffn}->{ffn}, "
                          f"heads {arch.heads}->{heads}")
    if heads * arch.head_dim != hidden:
        raise GrowthError(f"new_heads × head_dim must equal new_hidden ({heads} × {arch.head_dim} != {hidden}); "
                          "the head size is kept so rotary embeddings and attention scale stay the same")
    group = arch.heads // arch.kv_heads
    if heads % group:
        raise GrowthError(f"new_heads {heads} must be a multiple of the query group size {group}")
    return arch.with_changes(hidden=hidden, ffn=ffn, heads=heads, kv_heads=heads // group,
                             norm_eps=arch.norm_eps * arch.hidden / hidden, version=arch.version + 1)


def _embed(dst: torch.Tensor, src: torch.Tensor, zero_rest: bool) -> None:
    """Copy ``src`` into the leading corner of ``dst``; zero the rest or keep its random init."""
    if zero_rest:
        dst.zero_()
    dst[tuple(slice(0, s) for s in src.shape)] = src


def _widen_embedding(old: ModelShard, new: ModelShard) -> None:
    assert old.embedding is not None and new.embedding is not None
    if old.embedding.proj is None:
        _embed(new.embedding.table.weight, old.embedding.table.weight, zero_rest=True)
    else:
        assert new.embedding.proj is not None
        new.embedding.table.weight.copy_(old.embedding.table.weight)
        _embed(new.embedding.proj.weight, old.embedding.proj.weight, zero_rest=True)


def _widen_norm(dst: torch.Tensor, src: torch.Tensor, scale: float) -> None:
    dst.fill_(scale)
    dst[: src.shape[0]] = src * scale


def _widen_block(old: torch.nn.Module, new: torch.nn.Module, scale: float) -> None:
    _widen_norm(new.attn_norm.weight, old.attn_norm.weight, scale)
    _widen_norm(new.ffn_norm.weight, old.ffn_norm.weight, scale)
    for name in ("q_proj", "k_proj", "v_proj"):
        _embed(getattr(new.attn, name).weight, getattr(old.attn, name).weight, zero_rest=False)
    for name in ("gate_proj", "up_proj"):
        _embed(getattr(new.ffn, name).weight, getattr(old.ffn, name).weight, zero_rest=False)
    _embed(new.attn.o_proj.weight, old.attn.o_proj.weight, zero_rest=True)
    _embed(new.ffn.down_proj.weight, old.ffn.down_proj.weight, zero_rest=True)


def _widen_head(old: ModelShard, new: ModelShard, scale: float) -> None:
    assert old.head is not None and new.head is not None
    _widen_norm(new.head.norm.weight, old.head.norm.weight, scale)
    if old.head.down is not None and new.head.down is not None:
        _embed(new.head.down.weight, old.head.down.weight, zero_rest=False)
        new.head.out.weight.copy_(old.head.out.weight)
    elif not new.architecture.tie_embeddings:
        _embed(new.head.out.weight, old.head.out.weight, zero_rest=False)


# -- vocabulary -------------------------------------------------------------------------------------
def grow_vocab(model: ModelShard, new_tokens: int,
               sources: Sequence[Sequence[int]] | None = None) -> ModelShard:
    """Add ``new_tokens`` rows to the embedding and head; logits of old tokens are unchanged.

    ``sources[k]`` optionally lists the existing ids a new token is made of (a BPE merge's two
    parts): its embedding and head rows start as their mean, so the new token begins with a
    sensible meaning instead of noise. Without sources, embedding rows are random and head
    rows zero (a neutral logit of 0).
    """
    arch = model.architecture
    if new_tokens < 1:
        raise GrowthError(f"can only add a positive number of tokens, got {new_tokens}")
    if sources is not None:
        _check_sources(sources, new_tokens, arch.vocab)
    new = _rebuild(model, arch.with_changes(vocab=arch.vocab + new_tokens, version=arch.version + 1),
                   *model.layer_range)
    with torch.no_grad():
        new.load_state_dict(_without_vocab_tensors(model), strict=False)
        if model.embedding is not None and new.embedding is not None:
            _extend_rows(new.embedding.table.weight, model.embedding.table.weight, sources, True)
        if model.head is not None and new.head is not None and not arch.tie_embeddings:
            _extend_rows(new.head.out.weight, model.head.out.weight, sources, False)
    return new


def grow_vocab_in_place(model: ModelShard, sources: Sequence[Sequence[int]]) -> list[torch.nn.Parameter]:
    """Add ``len(sources)`` tokens to ``model``'s embedding and/or head, keeping its Parameter
    objects; new rows are the mean of their sources' rows (see ``grow_vocab``). Returns the
    parameters that gained rows (none for a shard without embedding and head)."""
    arch = model.architecture
    count = len(sources)
    if count < 1:
        raise GrowthError("can only add a positive number of tokens")
    _check_sources(sources, count, arch.vocab)
    grown: list[torch.nn.Parameter] = []
    with torch.no_grad():
        if model.embedding is not None:
            grown.append(_grow_parameter_rows(model.embedding.table.weight, sources))
            model.embedding.table.num_embeddings = arch.vocab + count
        if model.head is not None:
            if not arch.tie_embeddings:
                grown.append(_grow_parameter_rows(model.head.out.weight, sources))
            model.head.out.out_features = arch.vocab + count
    model._arch = arch.with_changes(vocab=arch.vocab + count)  # same package: the shard's own record
    return grown


def _grow_parameter_rows(param: torch.nn.Parameter, sources: Sequence[Sequence[int]]) -> torch.nn.Parameter:
    param.data = extend_rows(param.data, sources)
    return param


def extend_rows(src: torch.Tensor, sources: Sequence[Sequence[int]]) -> torch.Tensor:
    """``src`` with one row per entry of ``sources`` appended, each the mean of the rows it names
    (e.g. a DiLoCo anchor grown exactly as the weights it anchors)."""
    _check_sources(sources, len(sources), src.shape[0])
    with torch.no_grad():
        new = src.new_empty((src.shape[0] + len(sources), *src.shape[1:]))
        _extend_rows(new, src, sources, random_default=False)
    return new


def _check_sources(sources: Sequence[Sequence[int]], count: int, vocab: int) -> None:
    if len(sources) != count:
        raise GrowthError(f"sources lists {len(sources)} tokens, expected {count}")
    for k, parts in enumerate(sources):
        if not parts or any(not 0 <= p < vocab + k for p in parts):
            raise GrowthError(f"sources[{k}] = {list(parts)} must name ids below {vocab + k} "
                              "(old tokens or new tokens listed before it)")


def _without_vocab_tensors(model: ModelShard) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items()
            if k not in ("embedding.table.weight", "head.out.weight")}


def _extend_rows(dst: torch.Tensor, src: torch.Tensor, sources: Sequence[Sequence[int]] | None,
                 random_default: bool) -> None:
    old = src.shape[0]
    dst[:old] = src
    for k in range(dst.shape[0] - old):
        if sources is not None:  # may name a new token listed earlier, so read from dst
            dst[old + k] = dst[list(sources[k])].mean(0)
        elif random_default:
            dst[old + k].normal_(0.0, INIT_STD)
        else:
            dst[old + k].zero_()


# -- whole-architecture conversion --------------------------------------------------------------------
def grow_to(model: ModelShard, target: ModelArchitecture) -> ModelShard:
    """Convert a whole model to a larger architecture: vocabulary, then width, then depth.

    The result's architecture equals ``target`` except ``norm_eps``, which width growth lowers
    to stay exact (module docstring), and ``version``, which becomes ``target.version``.
    """
    arch = model.architecture
    if model.layer_range != (0, arch.layers) or not (model.with_embedding and model.with_head):
        raise GrowthError("grow_to converts a whole model; grow each shard with grow_depth/grow_width")
    if target.head_dim != arch.head_dim or target.tie_embeddings != arch.tie_embeddings:
        raise GrowthError(f"cannot grow head_dim {arch.head_dim}->{target.head_dim} or change tying; "
                          "distil into a fresh model instead")
    if target.vocab > arch.vocab:
        model = grow_vocab(model, target.vocab - arch.vocab)
    if (target.hidden, target.ffn, target.heads) != (arch.hidden, arch.ffn, arch.heads):
        model = grow_width(model, target.hidden, target.ffn, target.heads)
    if target.layers > arch.layers:
        model = grow_depth(model, target.layers - arch.layers)
    grown = model.architecture
    if (grown.kv_heads, grown.vocab, grown.layers, grown.max_seq) != (
            target.kv_heads, target.vocab, target.layers, target.max_seq):
        raise GrowthError(f"growth reached {grown} which does not match the target {target}")
    final = grown.with_changes(version=target.version)
    new = _rebuild(model, final, 0, final.layers)
    new.load_state_dict(model.state_dict())
    return new


# -- when to grow (seed 004's Arbor trigger) -------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class GrowthPolicy:
    """Arbor's layer-growth settings (seed 004 defaults), overridable by config.

    threshold: a layer counts as saturated above this utilisation (0.92).
    saturated_fraction: grow when this share of layers is saturated (0.8).
    cooldown: steps to wait after a growth before the next (5000).
    min_layers / max_layers: growth never leaves this range (24 / 64 in Arbor; ours start
    from the scaler's layer count, so min defaults to 1).
    factor: layers added at a time (4).
    """

    threshold: float = 0.92
    saturated_fraction: float = 0.8
    cooldown: int = 5000
    min_layers: int = 1
    max_layers: int = 64
    factor: int = 4

    def __post_init__(self) -> None:
        if not (0 < self.threshold <= 1 and 0 < self.saturated_fraction <= 1):
            raise ValueError("threshold and saturated_fraction must be in (0, 1]")
        if self.cooldown < 0 or self.factor < 1 or not 1 <= self.min_layers <= self.max_layers:
            raise ValueError("need cooldown >= 0, factor >= 1 and 1 <= min_layers <= max_layers")


def should_grow(policy: GrowthPolicy, utilisation: Sequence[float], *, step: int,
                last_growth_step: int | None, layers: int) -> int:
    """How many layers to add now (0 = do not grow): saturated enough, out of cooldown, and
    below ``max_layers`` (capped so growth never passes it)."""
    if layers >= policy.max_layers or not utilisation:
        return 0
    if last_growth_step is not None and step - last_growth_step < policy.cooldown:
        return 0
    if layers < policy.min_layers:
        return min(policy.factor, policy.max_layers - layers)
    saturated = sum(u > policy.threshold for u in utilisation) / len(utilisation)
    if saturated < policy.saturated_fraction:
        return 0
    return min(policy.factor, policy.max_layers - layers)


def activation_utilisation(hidden_states: torch.Tensor, floor: float = 0.1) -> float:
    """Share of hidden channels a layer actually uses, in [0, 1].

    Seed 004 multiplies activation magnitude by density, which is unbounded and so cannot be
    compared to a 0.92 threshold. We count channels whose RMS over all tokens exceeds
    ``floor`` × the mean channel RMS: a layer that writes into every channel scores near 1.
    """
    channel_rms = hidden_states.detach().float().reshape(-1, hidden_states.shape[-1]).pow(2).mean(0).sqrt()
    mean = channel_rms.mean()
    if mean <= 0:
        return 0.0
    return float((channel_rms > floor * mean).float().mean())
