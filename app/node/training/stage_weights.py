"""A stage's weights as other parts see them: PoNW hashes, per-layer hashes, weight transfer.

Hashes are taken over float32 CPU bytes, so nodes on different devices agree. Every commit needs
the whole stage's hash twice (Proof-of-Neural-Work's before and after), and hashing a large stage
costs more than its step on a GPU: so ``StageWeights.hash`` remembers the hash until a tensor
changes (autograd's in-place counter, storage or shape: every weight write moves one of them),
which makes a step's "before" the previous step's "after" for free.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

import torch

from app.node.model.shard import ModelShard
from app.node.training.transport import GiveUp


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names and float32 CPU bytes: the same on every device."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().to("cpu").contiguous().float().numpy().tobytes())
    return digest.hexdigest()


class StageWeights:
    def __init__(self, shard: ModelShard, lock: threading.Lock, on_loaded: Callable[[], None]) -> None:
        """``lock``: the stage's compute lock; ``on_loaded()``, called with it held after new weights
        were copied in (the stage drops its forward graphs)."""
        self._shard, self._lock, self._on_loaded = shard, lock, on_loaded
        self._hash_cache: tuple[tuple, str] | None = None

    def hash(self) -> str:
        """SHA-256 of the stage's weights (cached, module docstring)."""
        state = self._shard.state_dict()
        key = tuple((name, t._version, t.data_ptr(), tuple(t.shape)) for name, t in state.items())
        if self._hash_cache is None or self._hash_cache[0] != key:
            self._hash_cache = (key, state_hash(state))
        return self._hash_cache[1]

    def layer_hashes(self) -> dict[str, str]:
        """SHA-256 per global layer (plus "embedding" / "head"), for cross-node agreement checks."""
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in self._shard.state_dict().items():
            parts = name.split(".")
            key = parts[1] if parts[0] == "blocks" else parts[0]
            groups.setdefault(key, {})[name] = tensor
        return {key: state_hash(state) for key, state in sorted(groups.items())}

    def for_transfer(self) -> dict[str, torch.Tensor]:
        with self._lock:  # a CPU copy in every case: the caller may keep it while we train on
            return {k: v.detach().to("cpu", copy=True) for k, v in self._shard.state_dict().items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Copy ``state`` (a replica's or a checkpoint's weights for exactly these layers) in."""
        own = self._shard.state_dict()
        if set(state) != set(own):
            raise GiveUp(f"weights for {self._shard.layer_range} have keys {sorted(set(state) ^ set(own))[:4]} "
                         "that do not match this stage")
        for name, tensor in state.items():
            if tensor.shape != own[name].shape:
                raise GiveUp(f"{name}: shape {tuple(tensor.shape)} != {tuple(own[name].shape)}")
        with self._lock, torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor)
            self._on_loaded()
