"""The inference-session messages on the wire (neuroshard.proto's Inference service), both ends.

Tensors travel inside the message as raw little-endian bytes with dtype and shape (DESIGN.md §5);
a prefill is sent in pieces of at most ``MAX_STEP_POSITIONS`` positions so one message stays far
below the gRPC limit. The receiver's checks live here: every number range-checked, every size
derived from the stage's real shapes, never from what the peer declares.
"""

from __future__ import annotations

import math

import grpc
import numpy as np
import torch

from app.node.p2p.errors import RpcRefusal
from app.node.p2p.protocol import STAGE_PROTOCOL_VERSION, pb2

SESSION_ID_BYTES = 16
MAX_STEP_POSITIONS = 256
"""Positions per Step message: 256 x hidden 4096 x 4 bytes = 4 MiB, inside the 8 MiB default."""
_DTYPES = {"int64": torch.int64, "float32": torch.float32}
_NAMES = {v: k for k, v in _DTYPES.items()}


def refuse(reason: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> RpcRefusal:
    return RpcRefusal(code, reason)


def check_range(name: str, value: int, lo: int, hi: int) -> int:
    """``value`` if ``lo <= value <= hi``, else INVALID_ARGUMENT naming the field and its bounds."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise refuse(f"{name} = {str(value)[:24]} is out of range [{lo}, {hi}]")
    return value


def check_common(request: pb2.InferenceOpenRequest | pb2.InferenceStepRequest | pb2.InferenceCloseRequest) -> bytes:
    """Version and session id of any session request; returns the id."""
    if request.stage_version != STAGE_PROTOCOL_VERSION:
        raise refuse(f"stage protocol version {request.stage_version} is not supported: this node speaks "
                     f"version {STAGE_PROTOCOL_VERSION}", grpc.StatusCode.FAILED_PRECONDITION)
    if len(request.session_id) != SESSION_ID_BYTES:
        raise refuse(f"session_id must be {SESSION_ID_BYTES} bytes, got {len(request.session_id)}")
    return bytes(request.session_id)


def tensor_fields(tensor: torch.Tensor) -> tuple[pb2.TensorSpec, bytes]:
    """The spec and raw bytes of an int64 or float32 tensor."""
    tensor = tensor.detach().contiguous().cpu()
    if tensor.dtype not in _NAMES:
        tensor = tensor.float()
    spec = pb2.TensorSpec(name="x", dtype=_NAMES[tensor.dtype], shape=list(tensor.shape))
    return spec, tensor.numpy().tobytes()


def parse_tensor(spec: pb2.TensorSpec, data: bytes, *, dtype: torch.dtype, shape: tuple[int | None, ...],
                 what: str) -> torch.Tensor:
    """Decode a tensor whose dtype and shape must match ``dtype`` / ``shape`` (None = any size in
    [1, MAX_STEP_POSITIONS]); the byte count must be exactly what the shape needs."""
    if spec.dtype != _NAMES[dtype]:
        raise refuse(f"{what} must be {_NAMES[dtype]}, got {spec.dtype[:16]!r}")
    if len(spec.shape) != len(shape):
        raise refuse(f"{what} must have {len(shape)} dimensions, got {len(spec.shape)}")
    dims = []
    for n, (got, want) in enumerate(zip(spec.shape, shape, strict=True)):
        if want is None:
            dims.append(check_range(f"{what} dimension {n}", int(got), 1, MAX_STEP_POSITIONS))
        elif got != want:
            raise refuse(f"{what} dimension {n} must be {want}, got {got}")
        else:
            dims.append(want)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(data) != math.prod(dims) * itemsize:
        raise refuse(f"{what} carries {len(data)} bytes, its shape {dims} needs {math.prod(dims) * itemsize}")
    array = np.frombuffer(data, dtype=np.int64 if dtype == torch.int64 else np.float32).reshape(dims)
    out = torch.from_numpy(array.copy())
    if dtype == torch.float32 and not bool(torch.isfinite(out).all()):
        raise refuse(f"{what} holds NaN or infinite values")
    return out


def open_request(session_id: bytes, layer_range: tuple[int, int], max_length: int) -> pb2.InferenceOpenRequest:
    return pb2.InferenceOpenRequest(stage_version=STAGE_PROTOCOL_VERSION, session_id=session_id,
                                    layer_start=layer_range[0], layer_end=layer_range[1], max_length=max_length)


def step_request(session_id: bytes, position: int, x: torch.Tensor, *, more: bool = False,
                 payment: bytes = b"") -> pb2.InferenceStepRequest:
    spec, data = tensor_fields(x)
    return pb2.InferenceStepRequest(stage_version=STAGE_PROTOCOL_VERSION, session_id=session_id,
                                    position=position, input=spec, data=data, more=more, payment=payment)


def close_request(session_id: bytes, payment: bytes = b"") -> pb2.InferenceCloseRequest:
    return pb2.InferenceCloseRequest(stage_version=STAGE_PROTOCOL_VERSION, session_id=session_id, payment=payment)
