"""Where and how the model runs: float32 on CPU, bf16 autocast on CUDA, optional compile.

Kept apart from the modules (torchtitan's habit): the layers know nothing of devices.
PLATFORM.md: ``torch.compile`` costs ~40 s cold on this CPU for +10 %, so it is off by default
there; on CUDA it gives ~1.5× (PLATFORM.md's H100 table) and is on by default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@contextlib.contextmanager
def autocast(device: torch.device | str) -> Iterator[None]:
    """bf16 autocast on CUDA (weights and optimiser state stay float32); nothing on CPU,
    where bf16 matmuls are slower than float32 on most volunteer machines."""
    if torch.device(device).type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def maybe_compile(module: nn.Module, enabled: bool | None = None) -> nn.Module:
    """``torch.compile`` the module when enabled (default: only when it lives on CUDA)."""
    param = next(module.parameters(), None)
    on_cuda = param is not None and param.device.type == "cuda"
    if enabled is None:
        enabled = on_cuda
    return torch.compile(module) if enabled else module  # type: ignore[return-value]
