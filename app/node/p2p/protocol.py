"""The wire protocol: generated protobuf modules, the protocol version and the method table.

Importing this module compiles ``neuroshard.proto`` first when the generated code is missing or
stale (build_proto.py), so callers never import ``generated`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from app.node.p2p import build_proto

build_proto.ensure_compiled()

from app.node.p2p.generated import neuroshard_pb2 as pb2  # noqa: E402
from app.node.p2p.generated import neuroshard_pb2_grpc as pb2_grpc  # noqa: E402

PROTOCOL_VERSION = 2
"""Bumped on any incompatible change of messages or signing rules."""

MIN_COMPATIBLE_VERSION = 2
"""Oldest peer version this node still talks to; older ones get FAILED_PRECONDITION."""


STAGE_PROTOCOL_VERSION = 1
"""Version of the typed stage protocol (Forward/Backward/Commit/Finish, Exchange, Weights): a
stage request of any other version is refused FAILED_PRECONDITION naming both."""


def is_compatible(version: int) -> bool:
    return MIN_COMPATIBLE_VERSION <= version <= PROTOCOL_VERSION


class Shape(Enum):
    """How a method streams: decides the gRPC call style on both ends."""

    UNARY = "unary_unary"
    RESPONSE_STREAM = "unary_stream"
    BIDI = "stream_stream"


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    shape: Shape
    request: type
    response: type
    traffic: str  # stats bucket: activations, pseudo_gradients, weights, ledger, data, dht

    @property
    def path(self) -> str:
        return f"/neuroshard.v1.{self.service}/{self.name}"


def _m(service: str, name: str, shape: Shape, req: type, resp: type, traffic: str) -> Method:
    return Method(service, name, shape, req, resp, traffic)


_U, _S, _B = Shape.UNARY, Shape.RESPONSE_STREAM, Shape.BIDI
METHODS: dict[str, Method] = {
    m.path: m
    for m in (
        _m("Dht", "Ping", _U, pb2.PingRequest, pb2.PingResponse, "dht"),
        _m("Dht", "FindNode", _U, pb2.FindNodeRequest, pb2.FindNodeResponse, "dht"),
        _m("Dht", "FindValue", _U, pb2.FindValueRequest, pb2.FindValueResponse, "dht"),
        _m("Dht", "Store", _U, pb2.StoreRequest, pb2.StoreResponse, "dht"),
        _m("Tracker", "Register", _U, pb2.RegisterRequest, pb2.RegisterResponse, "dht"),
        _m("Tracker", "Peers", _U, pb2.PeersRequest, pb2.PeersResponse, "dht"),
        _m("Tracker", "Heartbeat", _U, pb2.HeartbeatRequest, pb2.HeartbeatResponse, "dht"),
        _m("Pipeline", "Forward", _B, pb2.TensorChunk, pb2.TensorChunk, "activations"),
        _m("Pipeline", "Backward", _B, pb2.TensorChunk, pb2.TensorChunk, "activations"),
        _m("Pipeline", "Commit", _U, pb2.CommitRequest, pb2.CommitReply, "activations"),
        _m("Pipeline", "Finish", _U, pb2.FinishRequest, pb2.FinishReply, "activations"),
        _m("Pipeline", "VerifyStep", _S, pb2.VerifyStepRequest, pb2.VerifyStepChunk, "weights"),
        _m("Sync", "Exchange", _B, pb2.TensorChunk, pb2.TensorChunk, "pseudo_gradients"),
        _m("Sync", "Weights", _B, pb2.TensorChunk, pb2.TensorChunk, "weights"),
        _m("Ledger", "Gossip", _U, pb2.GossipRequest, pb2.GossipResponse, "ledger"),
        _m("Data", "Shard", _S, pb2.ShardRequest, pb2.ShardChunk, "data"),
        _m("Inference", "Open", _U, pb2.InferenceOpenRequest, pb2.InferenceOpenReply, "activations"),
        _m("Inference", "Step", _U, pb2.InferenceStepRequest, pb2.InferenceStepReply, "activations"),
        _m("Inference", "Close", _U, pb2.InferenceCloseRequest, pb2.InferenceCloseReply, "activations"),
        _m("Relay", "Forward", _B, pb2.RelayFrame, pb2.RelayFrame, "dht"),
        _m("Relay", "Tunnel", _B, pb2.RelayFrame, pb2.RelayFrame, "dht"),
        _m("Punch", "Connect", _B, pb2.PunchMessage, pb2.PunchMessage, "dht"),
    )
}

RELAYABLE = frozenset(p for p, m in METHODS.items() if m.service != "Relay")
"""Methods a relay passes through a tunnel; relaying a relay call is refused (no loops)."""

__all__ = ["pb2", "pb2_grpc", "PROTOCOL_VERSION", "STAGE_PROTOCOL_VERSION", "METHODS", "Method", "Shape", "is_compatible"]
