"""The node runtime the engine drives: ``create_runtime(ctx)`` (see runtime_api.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.node.runtime.node_runtime import NodeRuntime
    from app.node.runtime.status import StepSink
    from app.node.runtime_api import RuntimeContext


def create_runtime(ctx: RuntimeContext, step_sinks: Sequence[StepSink] = ()) -> NodeRuntime:
    """Build the node's runtime (imports torch and grpc: call it off the GUI thread); ``step_sinks``
    are told every step the node applies, after the economy."""
    from app.node.runtime.node_runtime import NodeRuntime

    return NodeRuntime(ctx, step_sinks)
