import hashlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from app.node.p2p.errors import MalformedMessage
from app.node.p2p.protocol import pb2
from app.node.p2p.tensor_codec import DTYPES, Limits, decode_tensors, encode_tensors


@settings(max_examples=40, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(0, 40), min_size=0, max_size=3), min_size=1, max_size=4),
       dtype=st.sampled_from(sorted(DTYPES)), chunk=st.sampled_from([7, 64, 1 << 20]))
def test_round_trip_preserves_every_dtype_shape_and_value(shapes, dtype, chunk):
    tensors = {}
    for i, shape in enumerate(shapes):
        base = torch.randn(shape) * 50
        tensors[f"t{i}"] = base.to(DTYPES[dtype])
    out = decode_tensors(encode_tensors(tensors, chunk_bytes=chunk))
    assert list(out) == list(tensors)
    for name, tensor in tensors.items():
        assert out[name].dtype == tensor.dtype and out[name].shape == tensor.shape
        assert torch.equal(out[name], tensor)


def test_large_tensor_is_cut_into_one_mib_chunks():
    chunks = list(encode_tensors({"x": torch.zeros(3 << 20, dtype=torch.int8)}))
    assert chunks[0].WhichOneof("part") == "header"
    assert [len(c.data) for c in chunks[1:]] == [1 << 20] * 3


def test_bytes_are_little_endian_raw_values():
    chunks = list(encode_tensors({"x": torch.tensor([1.0], dtype=torch.float32)}))
    assert chunks[1].data == b"\x00\x00\x80\x3f"


def test_dtype_outside_whitelist_is_refused_on_both_ends():
    with pytest.raises(ValueError, match="dtype"):
        list(encode_tensors({"x": torch.zeros(2, dtype=torch.float64)}))
    chunks = list(encode_tensors({"x": torch.zeros(2)}))
    chunks[0].header.tensors[0].dtype = "object"
    with pytest.raises(MalformedMessage, match="not allowed"):
        decode_tensors(chunks)


def test_declared_element_count_over_limit_is_refused_before_allocation():
    header = pb2.StreamHeader(tensors=[pb2.TensorSpec(name="x", dtype="float32", shape=[1 << 40, 1 << 40])],
                              total_bytes=16, payload_sha256=b"\0" * 32)
    with pytest.raises(MalformedMessage, match="element"):
        decode_tensors([pb2.TensorChunk(header=header)], Limits(max_elements=1 << 20))


def test_payload_that_overruns_or_falls_short_of_header_is_refused():
    chunks = list(encode_tensors({"x": torch.ones(4)}))
    with pytest.raises(MalformedMessage, match="more bytes"):
        decode_tensors([*chunks, pb2.TensorChunk(data=b"\0")])
    with pytest.raises(MalformedMessage, match="ended"):
        decode_tensors(chunks[:1])


def test_tampered_payload_fails_the_digest():
    chunks = list(encode_tensors({"x": torch.ones(4)}))
    chunks[1].data = b"\0" * len(chunks[1].data)
    with pytest.raises(MalformedMessage, match="digest"):
        decode_tensors(chunks)
    assert len(chunks[0].header.payload_sha256) == len(hashlib.sha256().digest())


def test_meta_must_be_a_json_object():
    chunks = list(encode_tensors({"x": torch.ones(1)}))
    chunks[0].header.meta_json = "[1, 2]"
    with pytest.raises(MalformedMessage, match="object"):
        decode_tensors(chunks)


def test_mixed_dtypes_after_an_odd_sized_int8_tensor_decode_correctly():
    tensors = {"mask": torch.ones(3, dtype=torch.int8), "h": torch.randn(5, 2).to(torch.bfloat16),
               "g": torch.randn(7), "half": torch.randn(3).half()}
    out = decode_tensors(encode_tensors(tensors, chunk_bytes=5))
    assert all(torch.equal(out[k], tensors[k]) for k in tensors)


def test_pre_encoded_data_chunk_is_wire_identical_to_protobuf():
    from app.node.p2p.wire import encode_data, parser

    for size in (0, 1, 127, 128, 300, 1 << 20):
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        raw = encode_data(memoryview(payload))
        assert raw == pb2.TensorChunk(data=payload).SerializeToString()
        parsed = parser(pb2.TensorChunk)(raw)
        assert parsed.WhichOneof("part") == "data" and bytes(parsed.data) == payload
    # a header or a message with extra fields never takes the fast path
    header = pb2.TensorChunk(header=pb2.StreamHeader(kind="forward")).SerializeToString()
    assert parser(pb2.TensorChunk)(header).WhichOneof("part") == "header"
    assert parser(pb2.TensorChunk)(encode_data(b"ab") + b"\x18\x01").WhichOneof("part") == "keepalive"


def test_snapshot_buffers_do_not_change_when_the_tensor_does():
    from app.node.p2p.tensor_codec import build_header

    weights = torch.zeros(1024)
    _, live = build_header("weights", {}, {"w": weights})
    _, frozen = build_header("weights", {}, {"w": weights}, snapshot=True)
    weights.add_(1.0)  # training moves on while the stream is being sent
    assert bytes(live[0]) == torch.ones(1024).numpy().tobytes()  # a view: would tear
    assert bytes(frozen[0]) == torch.zeros(1024).numpy().tobytes()
