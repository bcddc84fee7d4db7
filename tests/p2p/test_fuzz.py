"""Garbage, oversized and malformed messages are refused with a status; the node keeps serving."""

import random

import grpc
import pytest
import torch

from app.node.p2p.auth import sign_message
from app.node.p2p.config import MIB
from app.node.p2p.errors import PeerRejected
from app.node.p2p.protocol import METHODS, PROTOCOL_VERSION, Shape, pb2
from app.node.p2p.tensor_codec import build_header
from app.node.p2p.tls import pinned_channel, probe

from .helpers import double, run, swarm

_FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
             grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE,
             grpc.StatusCode.ABORTED}


async def _raw_call(channel: grpc.aio.Channel, path: str, payloads: list[bytes]) -> grpc.StatusCode:
    """Send undecoded bytes to ``path``; returns the final status code."""
    shape = METHODS[path].shape
    try:
        if shape is Shape.UNARY:
            await channel.unary_unary(path)(payloads[0], timeout=3)
        elif shape is Shape.RESPONSE_STREAM:
            async for _ in channel.unary_stream(path)(payloads[0], timeout=3):
                pass
        else:
            async for _ in channel.stream_stream(path)(iter(payloads), timeout=3):
                pass
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_random_bytes_to_every_rpc_are_refused_without_crashing_the_node():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (target, other)):
            target.set_stage_handler(double)
            rng = random.Random(1234)
            async with pinned_channel(target.address, await probe(target.address, 2)) as channel:
                for path in METHODS:
                    for _ in range(25):
                        payloads = [rng.randbytes(rng.randint(0, 300)) for _ in range(rng.randint(1, 4))]
                        code = await _raw_call(channel, path, payloads)
                        # random bytes occasionally decode as a harmless valid message (e.g. empty Ping)
                        assert code in _FAILURES or code == grpc.StatusCode.OK, (path, code)
            assert (await other.ping(target.address)).node_id == target.node_id
            meta, tensors = await other.call_stage(target.address, "forward", {"microbatch": 1},
                                                   {"x": torch.ones(2)}, timeout=3)
            assert torch.equal(tensors["y"], torch.full((2,), 2.0))

    run(scenario(), timeout=120)


def test_oversized_message_is_refused_with_resource_exhausted():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (target, other)):
            target.set_gossip_handler("ledger", lambda sender, payloads: _never())
            request = pb2.GossipRequest(protocol_version=PROTOCOL_VERSION, topic="ledger",
                                        payloads=[b"\0" * (9 * MIB)])
            async with pinned_channel(target.address, await probe(target.address, 2),
                                      [("grpc.max_send_message_length", 64 * MIB)]) as channel:
                code = await _raw_call(channel, "/neuroshard.v1.Ledger/Gossip", [request.SerializeToString()])
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await other.ping(target.address)).node_id == target.node_id

    run(scenario())


async def _never() -> list[bytes]:
    raise AssertionError("an oversized gossip must never reach the handler")


def test_tensor_header_declaring_a_huge_tensor_is_refused_before_allocation():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (target, other)):
            target.set_stage_handler(double)
            header, _ = build_header("forward", {}, {"x": torch.ones(1)})
            del header.tensors[:]
            header.tensors.add(name="x", dtype="float32", shape=[1 << 31, 1 << 31])
            header.total_bytes = 1 << 63
            sign_message(other.key, "/neuroshard.v1.Pipeline/Forward", header)
            with pytest.raises(PeerRejected) as err:
                async for _ in other.client.stream(target.address, "/neuroshard.v1.Pipeline/Forward",
                                                   [pb2.TensorChunk(header=header)], 3):
                    pass
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT

    run(scenario())


def test_peer_that_keeps_sending_garbage_is_dropped():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (target, other)):
            bad = pb2.FindNodeRequest(protocol_version=PROTOCOL_VERSION, target=b"short")
            codes = []
            for _ in range(12):
                try:
                    await other.client.unary(target.address, "/neuroshard.v1.Dht/FindNode", bad, 2)
                except PeerRejected as exc:
                    codes.append(exc.code)
            assert codes[0] == grpc.StatusCode.INVALID_ARGUMENT
            assert codes[-1] == grpc.StatusCode.PERMISSION_DENIED  # dropped: refused outright now
            good = pb2.PingRequest(protocol_version=PROTOCOL_VERSION)
            with pytest.raises(PeerRejected):
                await other.client.unary(target.address, "/neuroshard.v1.Dht/Ping", good, 2)

    run(scenario())


def _random_message(message_type, rng: random.Random, depth: int = 0):
    """A message of ``message_type`` with random values in every field (nested up to depth 2)."""
    message = message_type()
    for field in message_type.DESCRIPTOR.fields:
        if field.name == "protocol_version":
            setattr(message, field.name, rng.choice([PROTOCOL_VERSION, PROTOCOL_VERSION, 0, 99]))
            continue
        repeated = field.is_repeated
        count = rng.randint(0, 3) if repeated else 1
        for _ in range(count):
            if field.type == field.TYPE_MESSAGE:
                if depth >= 2:
                    break
                value = _random_message(getattr(pb2, field.message_type.name), rng, depth + 1)
                (getattr(message, field.name).add().CopyFrom(value) if repeated
                 else getattr(message, field.name).CopyFrom(value))
                continue
            if field.type == field.TYPE_BYTES:
                value = rng.randbytes(rng.choice([0, 1, 16, 32, 33, 64, 200]))
            elif field.type == field.TYPE_STRING:
                value = rng.choice(["", "forward", "ledger", "{}", '{"a": 1}', "x" * 300, "🙂"])
            elif field.type == field.TYPE_BOOL:
                value = rng.random() < 0.5
            elif field.type == field.TYPE_DOUBLE:
                value = rng.uniform(-1e9, 1e9)
            else:
                value = rng.choice([0, 1, 7, 2**31, 2**63 - 1]) if field.type in (
                    field.TYPE_UINT64, field.TYPE_INT64) else rng.choice([0, 1, 7, 2**31])
            if repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)
            if field.containing_oneof is not None:
                break
    return message


def test_structured_garbage_in_valid_messages_is_refused_without_crashing_the_node():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (target, other)):
            target.set_stage_handler(double)
            target.set_gossip_handler("ledger", lambda sender, payloads: _never())
            rng = random.Random(99)
            async with pinned_channel(target.address, await probe(target.address, 2)) as channel:
                for path, method in METHODS.items():
                    for _ in range(15):
                        messages = [_random_message(method.request, rng).SerializeToString()
                                    for _ in range(rng.randint(1, 3))]
                        code = await _raw_call(channel, path, messages)
                        assert code in _FAILURES or code == grpc.StatusCode.OK, (path, code)
            assert (await other.ping(target.address)).node_id == target.node_id
            meta, _ = await other.call_stage(target.address, "forward", {"microbatch": 5}, {"x": torch.ones(2)}, 3)
            assert meta["microbatch"] == 5

    run(scenario(), timeout=120)
