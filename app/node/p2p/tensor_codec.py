"""Tensors on the wire: dtype + shape + raw little-endian bytes, streamed in ~1 MiB chunks.

PLATFORM.md measured raw bytes at 0.45 ms per 8 MiB against 10.3 ms for ``torch.save``, and
single messages of 16 MiB or more at 3-5x the cost per byte of 1 MiB chunks. Nothing a peer sends
is ever unpickled: a stream is one :class:`StreamHeader` (names, dtypes, shapes, total size)
followed by ``data`` chunks, and the decoder checks every declared size against the limits
before it allocates anything.

The payload digest. Every connection is TLS (tls.py), which authenticates every byte of a
stream, and the header's signature names the caller and the recipient (auth.py): on a direct
stream nobody but the signer can have written the data that follows its header, so a SHA-256 of
the payload would buy nothing and cost a full pass over it before the first byte leaves. A
relayed stream is different: the relay terminates TLS and could alter the data. There the
sender hashes chunk by chunk while sending (in a worker thread) and ends with a signed
:class:`StreamTrailer`; the receiver hashes in a worker thread as chunks arrive and checks the
trailer at the end. A header may still carry ``payload_sha256`` (tools, tests); it is then checked.

Receive buffers come from :data:`RECEIVE_BUFFERS`: a buffer goes back to the pool when the last
tensor viewing it is gone, so steady traffic of the same shapes copies into memory that is
already mapped instead of paying a page fault per 4 KiB of every new buffer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import math
import mmap
import sys
import threading
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import torch

from app.node.p2p.config import MIB
from app.node.p2p.errors import MalformedMessage, RpcRefusal
from app.node.p2p.protocol import PROTOCOL_VERSION, pb2
from app.node.p2p.wire import encode_data, parser

DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    "int8": torch.int8,
}
"""The whitelist: activations and weights (bf16/fp16/fp32) and int8 pseudo-gradients (INTELLECT-1)."""
_NAMES = {v: k for k, v in DTYPES.items()}
MAX_TENSORS = 4096
MAX_NAME = 256
MAX_DIMS = 8


@dataclass(frozen=True)
class Limits:
    """What a decoder accepts; defaults mirror P2PConfig."""

    max_elements: int = 1 << 30
    max_total_bytes: int = 1024 * MIB
    max_meta_bytes: int = 64 * 1024


def _raw_bytes(tensor: torch.Tensor, snapshot: bool = False) -> memoryview:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if snapshot and flat.data_ptr() == tensor.data_ptr():
        flat = flat.clone()  # still the caller's memory: copy it now, once, so later writes do not tear it
    if sys.byteorder != "little" and flat.element_size() > 1:  # pragma: no cover - big-endian hosts
        flat = flat.view(torch.uint8).reshape(-1, flat.element_size()).flip(1).reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


TRAILER_DOMAIN = b"NS-tensor-trailer-v1:"


def trailer_bytes(header_signature: bytes, digest: bytes) -> bytes:
    """What a trailer's signature covers: this very header (its signature) and the digest."""
    return TRAILER_DOMAIN + header_signature + digest


def build_header(kind: str, meta: Mapping[str, Any] | Any, tensors: Mapping[str, torch.Tensor],
                 compression: str = "", digest: bool = True, snapshot: bool = False,
                 ) -> tuple[Any, list[memoryview]]:
    """Header (without auth) and the raw buffers of ``tensors`` in order; ``digest=False`` leaves
    ``payload_sha256`` empty (direct TLS streams and relayed ones with a trailer). ``meta`` is a
    JSON object, or a typed stage-protocol message (placed in the header's ``call``). The
    buffers are views of the tensors' memory unless ``snapshot``: then each is copied first, for
    tensors training may update while the stream is sent (live weights, DiLoCo deltas)."""
    specs, buffers = [], []
    for name, tensor in tensors.items():
        if tensor.dtype not in _NAMES:
            raise ValueError(f"tensor {name!r} has dtype {tensor.dtype}; allowed: {sorted(DTYPES)}")
        specs.append(pb2.TensorSpec(name=name, dtype=_NAMES[tensor.dtype], shape=list(tensor.shape)))
        buffers.append(_raw_bytes(tensor, snapshot))
    payload_sha256 = b""
    if digest:
        hasher = hashlib.sha256()
        for buf in buffers:
            hasher.update(buf)
        payload_sha256 = hasher.digest()
    typed = not isinstance(meta, Mapping)  # a stage-protocol message rides in the header's `call`
    header = pb2.StreamHeader(
        protocol_version=PROTOCOL_VERSION, kind=kind,
        meta_json="" if typed else json.dumps(dict(meta), separators=(",", ":")),
        tensors=specs, total_bytes=sum(len(b) for b in buffers), payload_sha256=payload_sha256,
        compression=compression,
    )
    if typed:
        getattr(header, _CALL_FIELDS[type(meta).DESCRIPTOR.name]).CopyFrom(meta)
    return header, buffers


_CALL_FIELDS = {field.message_type.name: field.name
                for field in pb2.StreamHeader.DESCRIPTOR.oneofs_by_name["call"].fields}
"""Header field of each typed stage-protocol message (neuroshard.proto, StreamHeader.call)."""


def data_chunks(buffers: list[memoryview], chunk_bytes: int = MIB) -> Iterator[bytes]:
    """Serialised data chunks of ``chunk_bytes`` (the last may be shorter) over the concatenated
    buffers; each is a wire-ready ``TensorChunk(data=...)`` (wire.py: one copy per chunk)."""
    pending: list[memoryview] = []
    size = 0
    for buf in buffers:
        offset = 0
        while offset < len(buf):
            take = min(chunk_bytes - size, len(buf) - offset)
            pending.append(buf[offset:offset + take])
            size += take
            offset += take
            if size == chunk_bytes:
                yield encode_data(pending[0] if len(pending) == 1 else b"".join(pending))
                pending, size = [], 0
    if pending:
        yield encode_data(pending[0] if len(pending) == 1 else b"".join(pending))


def encode_tensors(tensors: Mapping[str, torch.Tensor], *, kind: str = "result",
                   meta: Mapping[str, Any] | None = None, chunk_bytes: int = MIB) -> Iterator[Any]:
    """The header message, then the data chunks, as messages (an unsigned stream, for tests
    and tools; the network path sends the pre-encoded chunks of :func:`data_chunks`)."""
    header, buffers = build_header(kind, meta or {}, tensors)
    yield pb2.TensorChunk(header=header)
    for raw in data_chunks(buffers, chunk_bytes):
        yield parser(pb2.TensorChunk)(raw)


def _check_spec(spec: Any, limits: Limits) -> int:
    if spec.dtype not in DTYPES:
        raise MalformedMessage(f"tensor dtype {spec.dtype[:32]!r} is not allowed")
    if not spec.name or len(spec.name) > MAX_NAME:
        raise MalformedMessage("tensor name is empty or too long")
    if len(spec.shape) > MAX_DIMS:
        raise MalformedMessage(f"tensor {spec.name!r} has more than {MAX_DIMS} dimensions")
    if any(d > limits.max_elements for d in spec.shape):
        raise MalformedMessage(f"tensor {spec.name!r} dimension exceeds the element limit")
    elements = math.prod(spec.shape)
    if elements > limits.max_elements:
        raise MalformedMessage(f"tensor {spec.name!r} has {elements} elements, limit {limits.max_elements}")
    return elements * DTYPES[spec.dtype].itemsize


def check_header(header: Any, limits: Limits) -> tuple[dict[str, Any] | Any, list[int]]:
    """Validate a header before any payload is read: returns (meta, byte size of each tensor);
    meta is the typed stage message when the header carries one, else the JSON object."""
    if header.compression:
        raise MalformedMessage(f"compression {header.compression[:32]!r} is not supported")
    if len(header.tensors) > MAX_TENSORS:
        raise MalformedMessage(f"{len(header.tensors)} tensors in one stream, limit {MAX_TENSORS}")
    if len({s.name for s in header.tensors}) != len(header.tensors):
        raise MalformedMessage("duplicate tensor names")
    sizes = [_check_spec(s, limits) for s in header.tensors]
    if sum(sizes) != header.total_bytes:
        raise MalformedMessage("declared total size does not match the tensors' shapes")
    if header.total_bytes > limits.max_total_bytes:
        raise RpcRefusal(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"stream declares {header.total_bytes} bytes, limit {limits.max_total_bytes}")
    if len(header.payload_sha256) not in (0, 32):
        raise MalformedMessage("payload digest must be empty or 32 bytes")
    call = header.WhichOneof("call")
    if call is not None:
        if header.meta_json:
            raise MalformedMessage("a typed stage message carries no JSON meta")
        return getattr(header, call), sizes
    return parse_meta(header.meta_json, limits.max_meta_bytes), sizes


def parse_meta(text: str, max_bytes: int) -> dict[str, Any]:
    if len(text) > max_bytes:
        raise MalformedMessage(f"meta is {len(text)} bytes, limit {max_bytes}")
    try:
        meta = json.loads(text) if text else {}
    except ValueError as exc:
        raise MalformedMessage(f"meta is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise MalformedMessage("meta must be a JSON object")
    return meta


def _view(flat: np.ndarray, offset: int, size: int, spec: Any) -> torch.Tensor:
    dtype = DTYPES[spec.dtype]
    if size == 0:
        return torch.empty(tuple(spec.shape), dtype=dtype)
    part = flat[offset:offset + size]
    if offset % dtype.itemsize:
        part = part.copy()  # misaligned for this dtype (after an odd-sized int8 tensor): realign
    return torch.from_numpy(part).view(dtype).reshape(tuple(spec.shape))


def assemble(header: Any, sizes: list[int], payload: np.ndarray) -> dict[str, torch.Tensor]:
    """Tensors over a complete, digest-checked uint8 payload (zero-copy where aligned)."""
    out, offset = {}, 0
    for spec, size in zip(header.tensors, sizes, strict=True):
        out[spec.name] = _view(payload, offset, size, spec)
        offset += size
    return out


class BufferPool:
    """Receive buffers by exact size, reused once no tensor views them any more.

    A buffer is anonymous mmap memory wrapped in a numpy array; tensors handed out are views of
    that array, so it lives while any of them does. When the last one goes, a finaliser puts the
    memory back here (at most ``max_bytes`` in all, ``per_size`` per size) for the next stream of
    that size, already faulted in. Thread-safe: tensors die on training threads too.
    """

    def __init__(self, max_bytes: int = 256 * MIB, per_size: int = 4) -> None:
        self.max_bytes, self.per_size = max_bytes, per_size
        self._free: dict[int, list[mmap.mmap]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def free_bytes(self) -> int:
        return self._bytes

    def take(self, size: int) -> np.ndarray:
        """An uninitialised uint8 array of ``size`` bytes (contents are whatever was there)."""
        if size == 0:
            return np.empty(0, dtype=np.uint8)
        with self._lock:
            spare = self._free.get(size)
            mem = spare.pop() if spare else None
            if mem is not None:
                self._bytes -= size
        if mem is None:
            mem = mmap.mmap(-1, size)  # untouched pages: a lying header costs address space only
        array = np.frombuffer(mem, dtype=np.uint8)
        weakref.finalize(array, self._give_back, mem)
        return array

    def _give_back(self, mem: mmap.mmap) -> None:
        size = len(mem)
        with self._lock:
            spare = self._free.setdefault(size, [])
            if len(spare) < self.per_size and self._bytes + size <= self.max_bytes:
                spare.append(mem)
                self._bytes += size


RECEIVE_BUFFERS = BufferPool()
_HASHER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tensor-digest")
"""One worker: updates of one digest must run in order. hashlib releases the GIL on big updates,
so hashing runs beside the event loop instead of on it."""


class StreamReader:
    """Copies the ``data`` chunks of one stream into place as they arrive.

    With ``hash_payload`` (or a digest in the header) each chunk is also hashed, in the worker
    thread, from its place in the buffer; :meth:`digest` waits for the last update. A stream may
    end with a :class:`StreamTrailer`, kept in :attr:`trailer` for the caller to verify.
    """

    def __init__(self, header: Any, limits: Limits, hash_payload: bool = False,
                 pool: BufferPool | None = RECEIVE_BUFFERS) -> None:
        self.header = header
        self.meta, self.sizes = check_header(header, limits)
        self._buf = pool.take(header.total_bytes) if pool is not None else np.empty(header.total_bytes, np.uint8)
        self._filled = 0
        self._hasher = hashlib.sha256() if hash_payload or header.payload_sha256 else None
        self._hashed: concurrent.futures.Future[None] | None = None
        self.trailer: Any = None

    def add(self, chunk: Any) -> None:
        kind = chunk.WhichOneof("part")
        if kind == "keepalive":
            return
        if self.trailer is not None:
            raise MalformedMessage(f"{kind} after the stream's trailer")
        if kind == "trailer":
            self.trailer = chunk.trailer
            return
        if kind != "data":
            raise MalformedMessage(f"expected a data chunk, got {kind}")
        data = chunk.data  # one access: upb copies the payload out on every access
        start, end = self._filled, self._filled + len(data)
        if end > len(self._buf):
            raise MalformedMessage("stream carries more bytes than its header declared")
        self._buf[start:end] = np.frombuffer(data, dtype=np.uint8)
        self._filled = end
        if self._hasher is not None and end > start:
            self._hashed = _HASHER.submit(self._hasher.update, self._buf[start:end])

    async def settled(self) -> None:
        """Wait, without blocking the loop, until every chunk received so far is hashed."""
        if self._hashed is not None:
            await asyncio.wrap_future(self._hashed)

    def digest(self) -> bytes:
        """SHA-256 of the payload received (empty when not hashing)."""
        if self._hasher is None:
            return b""
        if self._hashed is not None:
            self._hashed.result()
        return self._hasher.digest()

    def finish(self) -> dict[str, torch.Tensor]:
        if self._filled != len(self._buf):
            raise MalformedMessage(f"stream ended after {self._filled} of {len(self._buf)} bytes")
        if self.header.payload_sha256 and self.digest() != self.header.payload_sha256:
            raise MalformedMessage("payload digest does not match the header")
        return assemble(self.header, self.sizes, self._buf)


async def read_stream(chunks: AsyncIterable[Any], limits: Limits | None = None
                      ) -> tuple[Any, dict[str, Any], dict[str, torch.Tensor]]:
    """(header, meta, tensors) from an async chunk stream; keepalives are skipped."""
    iterator: AsyncIterator[Any] = chunks.__aiter__()
    header = None
    async for chunk in iterator:
        if chunk.WhichOneof("part") == "keepalive":
            continue
        if chunk.WhichOneof("part") != "header":
            raise MalformedMessage("a tensor stream must start with its header")
        header = chunk.header
        break
    if header is None:
        raise MalformedMessage("empty tensor stream")
    reader = StreamReader(header, limits or Limits())
    async for chunk in iterator:
        reader.add(chunk)
    return header, reader.meta, reader.finish()


def decode_tensors(chunks: Iterator[Any] | list[Any], limits: Limits | None = None) -> dict[str, torch.Tensor]:
    """Synchronous decoder for a complete chunk sequence (header first)."""
    iterator = iter(chunks)
    first = next(iterator, None)
    if first is None or first.WhichOneof("part") != "header":
        raise MalformedMessage("a tensor stream must start with its header")
    reader = StreamReader(first.header, limits or Limits())
    for chunk in iterator:
        reader.add(chunk)
    return reader.finish()
