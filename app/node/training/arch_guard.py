"""Stages compute only for drivers of the same architecture (block type, shapes, version).

Activations of a transformer stage have the same shape as those of an INL stage, so a wrong
pairing would not fail: it would train garbage. Every stage request therefore carries the
sender's architecture tag (``ARCH_KEY``), and a stage whose architecture differs answers
``ARCH_MISMATCH`` without computing; the driver's transport turns that answer into
``ArchitectureMismatch``, a RetryElsewhere: a holder of this driver's own architecture may
still take the request (DESIGN.md §8: versions never mix, cross-version requests are refused).

The tag covers every field of ``ModelArchitecture`` except ``vocab``, which the vocabulary tag
already names more precisely (app/node/training/vocab_growth.py). Requests without a tag (a
driver's calls into its own local stage) are not checked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from app.node.model.architecture import ModelArchitecture
from app.node.training.transport import Meta, RetryElsewhere, StageReply, StageTransport, Tensors

ARCH_KEY = "arch"
ARCH_MISMATCH = "arch_mismatch"


def arch_tag(arch: ModelArchitecture) -> str:
    """A short name of the architecture: block type, shapes and version, not the vocabulary."""
    fields = {k: v for k, v in arch.to_dict().items() if k != "vocab"}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return f"{arch.block_type}-v{arch.version}-{digest}"


def arch_refusal(meta: Meta, arch: ModelArchitecture, layer_range: tuple[int, int]) -> Meta | None:
    """The answer to a request tagged for another architecture, None when the stage may compute."""
    theirs = meta.get(ARCH_KEY)
    if theirs is None:
        return None
    mine = arch_tag(arch)
    if theirs == mine:
        return None
    return {"status": ARCH_MISMATCH, ARCH_KEY: mine,
            "error": f"stage {layer_range} computes for architecture {mine}, the request is for "
                     f"{str(theirs)[:60]}; ask a holder of the same architecture"}


class ArchitectureMismatch(RetryElsewhere):
    """The holder runs another architecture (block type, shape or version)."""


class ArchTaggedTransport:
    """A StageTransport whose calls carry this node's architecture tag (module docstring)."""

    def __init__(self, inner: StageTransport, arch: Callable[[], ModelArchitecture]) -> None:
        self.inner = inner
        self.arch = arch  # read at every call: a migration changes the node's architecture

    def holders(self, layer_start: int) -> list[str]:
        return self.inner.holders(layer_start)

    def retry_delay(self, attempt: int) -> float | None:
        return self.inner.retry_delay(attempt)

    async def call(self, layer_start: int, op: str, meta: Meta, tensors: Tensors, *,
                   prefer: str | None = None, exclude: frozenset[str] = frozenset()) -> StageReply:
        mine = arch_tag(self.arch())
        reply = await self.inner.call(layer_start, op, {**meta, ARCH_KEY: mine}, tensors,
                                      prefer=prefer, exclude=exclude)
        if reply.meta.get("status") != ARCH_MISMATCH:
            return reply
        raise ArchitectureMismatch(f"the stage at layer {layer_start} ({reply.peer[:12]}) runs architecture "
                                   f"{str(reply.meta.get(ARCH_KEY, ''))[:60]}, this driver {mine}", reply.peer)
