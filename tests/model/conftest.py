"""Model tests use the tiny architecture, whose matrices are too small to gain from threads;
one thread also keeps them fast when other test processes share the CPU (oversubscribed
intra-op threads wait on each other)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
