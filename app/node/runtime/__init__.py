"""The node runtime the engine drives: ``create_runtime(ctx)`` (see runtime_api.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.node.runtime.node_runtime import NodeRuntime
    from app.node.runtime_api import RuntimeContext


def create_runtime(ctx: RuntimeContext) -> NodeRuntime:
    """Build the node's runtime (imports torch and grpc: call it off the GUI thread)."""
    from app.node.runtime.node_runtime import NodeRuntime

    return NodeRuntime(ctx)
