"""Serialisation at the gRPC edge: exact byte counts, and a copy-free path for tensor data chunks.

A data chunk is the protobuf ``TensorChunk{data = 2}``: one tag byte (0x12), a varint length and
the payload. Building it through protobuf costs three copies of every MiB on the sender (slice,
message, serialise) and two on the receiver (parse, attribute access); writing those bytes
directly and reading the payload as a memoryview of the received buffer is wire-identical and
leaves one copy each way. Anything that is not exactly one data field goes through protobuf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.node.p2p.protocol import Method, pb2
from app.node.p2p.stats import TrafficStats

_DATA_TAG = b"\x12"  # field 2 (data), wire type 2 (length-delimited)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_data(payload: memoryview | bytes) -> bytes:
    """A serialised ``TensorChunk(data=payload)``, built with a single copy of the payload."""
    return b"".join((_DATA_TAG, _varint(len(payload)), payload))


class DataChunk:
    """A received data chunk: duck-types ``TensorChunk`` for ``WhichOneof`` and ``data`` (a view)."""

    __slots__ = ("data",)

    def __init__(self, data: memoryview) -> None:
        self.data = data

    @staticmethod
    def WhichOneof(_: str) -> str:  # noqa: N802 - protobuf's name
        return "data"


def _parse_data(raw: bytes) -> DataChunk | None:
    if raw[:1] != _DATA_TAG:
        return None
    length, shift, pos = 0, 0, 1
    while pos < len(raw) and pos <= 10:
        byte = raw[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return DataChunk(memoryview(raw)[pos:]) if pos + length == len(raw) else None
        shift += 7
    return None


def serialize(message: Any) -> bytes:
    """Protobuf messages are serialised; pre-encoded chunks (bytes) pass through."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def parser(message_type: type) -> Callable[[bytes], Any]:
    if message_type is pb2.TensorChunk:
        return lambda raw: _parse_data(raw) or pb2.TensorChunk.FromString(raw)
    return message_type.FromString


def counting(method: Method, stats: TrafficStats, *, server: bool) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(serializer, deserializer) for one side of ``method``, counting bytes as they cross."""
    incoming = parser(method.request if server else method.response)
    kind = method.traffic

    def serializer(message: Any) -> bytes:
        raw = serialize(message)
        stats.add_sent(kind, len(raw))
        return raw

    def deserializer(raw: bytes) -> Any:
        stats.add_received(kind, len(raw))
        return incoming(raw)

    return serializer, deserializer
