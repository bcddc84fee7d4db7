"""Typed errors of the P2P layer.

Client side, every failed call surfaces as a :class:`P2PError` subclass the caller can act on;
server side, handlers raise :class:`RpcRefusal` (the runtime turns training's GiveUp / WaitAndRetry /
RetryElsewhere into one) which the edge turns
into a gRPC status code, so a bad request is answered with a reason and never crashes the node.
"""

from __future__ import annotations

import grpc


class P2PError(Exception):
    """Base of every error the P2P layer raises to its callers."""


class PeerUnavailable(P2PError):
    """The peer could not be reached (connection refused, reset, or no live holder at all)."""


class PeerBusy(PeerUnavailable):
    """The peer is alive but will not take work right now (paused by its volunteer, swapping its
    stage): try a replica, and this peer again soon, without the escalating ban of a dead one."""


BUSY_PREFIX = "busy: "
"""How a server marks an UNAVAILABLE answer as a live peer's temporary refusal (see PeerBusy)."""


class RequestTimeout(P2PError):
    """The peer did not answer within the call's deadline."""


class PeerRejected(P2PError):
    """The peer answered but refused the request; ``code`` is the gRPC status it sent."""

    def __init__(self, reason: str, code: grpc.StatusCode = grpc.StatusCode.ABORTED) -> None:
        super().__init__(f"{reason} ({code.name})")
        self.reason = reason
        self.code = code


class ProtocolMismatch(P2PError):
    """The peer speaks an incompatible protocol version: one of the two nodes must update."""


class NoHolders(PeerUnavailable):
    """No live, un-banned peer holds the requested layer (the router has nobody to ask)."""


class RpcRefusal(Exception):
    """Raised inside a server handler: the request is refused with ``code`` and ``reason``."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class MalformedMessage(RpcRefusal):
    """A peer message that does not parse into a valid record or tensor stream."""

    def __init__(self, reason: str) -> None:
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, reason)


GRPC_CORE_INTERNAL = "Internal error from Core"
"""The details gRPC itself sets on INTERNAL when a stream fails below the application."""


def error_from_status(code: grpc.StatusCode, details: str | None, peer: str) -> P2PError:
    """Map a gRPC status seen by a client to the typed error callers handle."""
    text = details or code.name
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimeout(f"{peer} did not answer in time")
    if code == grpc.StatusCode.UNAVAILABLE and text.startswith(BUSY_PREFIX):
        return PeerBusy(f"{peer} is busy: {text.removeprefix(BUSY_PREFIX)}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN):
        return PeerUnavailable(f"{peer} is unavailable: {text}")
    if code == grpc.StatusCode.INTERNAL and text == GRPC_CORE_INTERNAL:
        # gRPC's own transport failure (a stream reset under load), not the peer's handler
        # refusing: a retry or a replica will do, like an unreachable peer
        return PeerUnavailable(f"{peer}: transport failure: {text}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return ProtocolMismatch(f"{peer}: {text}")
    return PeerRejected(f"{peer} refused the request: {text}", code)
