"""Garbage, oversized and malformed messages are refused with a status; the node keeps serving."""

import functools
import random
from collections.abc import Callable

import grpc
import pytest
import torch

from app.crypto.keys import PrivateKey
from app.node.p2p.auth import sign_message
from app.node.p2p.config import MIB
from app.node.p2p.errors import PeerRejected
from app.node.p2p.protocol import METHODS, PROTOCOL_VERSION, Shape, pb2
from app.node.p2p.tensor_codec import build_header
from app.node.p2p.tls import pinned_channel, probe
from app.node.p2p.tracker import HEARTBEAT, PEERS, REGISTER

from .helpers import double, run, swarm

_REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION,
             grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.OUT_OF_RANGE,
             grpc.StatusCode.NOT_FOUND}
"""What a handler may answer to garbage: a refusal with a reason. INTERNAL or UNKNOWN means a
handler crashed on its input (a bug), DEADLINE_EXCEEDED that it hung: both fail the test."""
_FRESH_EVERY = 4
"""A new channel (a new source port, so a new peer key on loopback) every few garbage calls:
the target's score would otherwise drop the fuzzer after ~10 calls and hide the decoders."""


async def _raw_call(channel: grpc.aio.Channel, path: str, payloads: list[bytes]) -> tuple[grpc.StatusCode, str]:
    """Send undecoded bytes to ``path``; returns the final status code and its details."""
    shape = METHODS[path].shape
    try:
        if shape is Shape.UNARY:
            await channel.unary_unary(path)(payloads[0], timeout=5)
        elif shape is Shape.RESPONSE_STREAM:
            async for _ in channel.unary_stream(path)(payloads[0], timeout=5):
                pass
        else:
            async for _ in channel.stream_stream(path)(iter(payloads), timeout=5):
                pass
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def _fuzz(address: str, paths: list[str], calls: int, make: Callable[[str, random.Random], list[bytes]],
                rng: random.Random) -> dict[grpc.StatusCode, int]:
    """``calls`` garbage calls to each path, on a fresh channel every _FRESH_EVERY calls; every
    answer must be OK or a refusal, and no call may be refused for an earlier one's ban."""
    der = await probe(address, 5)
    seen: dict[grpc.StatusCode, int] = {}
    for path in paths:
        for start in range(0, calls, _FRESH_EVERY):
            async with pinned_channel(address, der) as channel:
                for _ in range(min(_FRESH_EVERY, calls - start)):
                    code, details = await _raw_call(channel, path, make(path, rng))
                    assert code == grpc.StatusCode.OK or code in _REFUSALS, (path, code, details)
                    assert "dropped" not in details, (path, details)  # a ban would hide the decoder
                    seen[code] = seen.get(code, 0) + 1
    return seen


def _random_bytes(path: str, rng: random.Random) -> list[bytes]:
    return [rng.randbytes(rng.randint(0, 300)) for _ in range(rng.randint(1, 4))]


def test_random_bytes_to_every_rpc_are_refused_without_crashing_the_node():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (target, other)):
            target.set_stage_handler(double)
            seen = await _fuzz(target.address, list(METHODS), 25, _random_bytes, random.Random(1234))
            assert seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > len(METHODS)  # the decoders answered
            assert (await other.ping(target.address)).node_id == target.node_id
            meta, tensors = await other.call_stage(target.address, "forward", {"microbatch": 1},
                                                   {"x": torch.ones(2)}, timeout=3)
            assert torch.equal(tensors["y"], torch.full((2,), 2.0))

    run(scenario(), timeout=180)


def test_tracker_rpcs_refuse_garbage_and_the_tracker_keeps_serving():
    async def scenario():
        async with swarm(1) as (tracker, (node,)):
            paths = [REGISTER, PEERS, HEARTBEAT]
            rng = random.Random(7)
            seen = await _fuzz(tracker.address, paths, 40, _random_bytes, rng)
            structured = await _fuzz(tracker.address, paths, 40, _structured, rng)
            assert seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 0
            assert structured.get(grpc.StatusCode.UNAUTHENTICATED, 0) > 0  # signed-garbage reached the checks
            assert node.node_id in {r.node_id for r in await node.tracker_client.peers(tracker.address)} or \
                await node.tracker_client.register(tracker.address) is not None
            await node.tracker_client.heartbeat()
            assert tracker.entries[node.node_id].reachable

    run(scenario(), timeout=180)


def test_oversized_message_is_refused_with_resource_exhausted():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (target, other)):
            target.set_gossip_handler("ledger", lambda sender, payloads: _never())
            request = pb2.GossipRequest(protocol_version=PROTOCOL_VERSION, topic="ledger",
                                        payloads=[b"\0" * (9 * MIB)])
            async with pinned_channel(target.address, await probe(target.address, 2),
                                      [("grpc.max_send_message_length", 64 * MIB)]) as channel:
                code, _ = await _raw_call(channel, "/neuroshard.v1.Ledger/Gossip", [request.SerializeToString()])
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await other.ping(target.address)).node_id == target.node_id

    run(scenario())


async def _ignore(sender: bytes, payloads: list[bytes]) -> list[bytes]:
    return []


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
            sign_message(other.key, "/neuroshard.v1.Pipeline/Forward", header, target.node_id)
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
            elif field.type == field.TYPE_ENUM:
                value = rng.choice([v.number for v in field.enum_type.values])
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


def _structured(path: str, rng: random.Random, recipient: bytes = b"") -> list[bytes]:
    """Valid messages of the method's type with random fields; those that carry a signature are
    signed by a fresh key half the time (for ``recipient``), so the checks behind signature
    verification are reached."""
    method = METHODS[path]
    out = []
    for _ in range(rng.randint(1, 3)):
        message = _random_message(method.request, rng)
        if "auth" in method.request.DESCRIPTOR.fields_by_name and rng.random() < 0.5:
            sign_message(PrivateKey.generate(), path, message, recipient)
        elif method.request is pb2.TensorChunk and message.WhichOneof("part") == "header" and rng.random() < 0.5:
            sign_message(PrivateKey.generate(), path, message.header, recipient)
        out.append(message.SerializeToString())
    return out


def test_structured_garbage_in_valid_messages_is_refused_without_crashing_the_node():
    async def scenario():
        async with swarm(2, tracker=False) as (_, (target, other)):
            target.set_stage_handler(double)
            target.set_gossip_handler("ledger", _ignore)  # signed gossip from a stranger is valid
            seen = await _fuzz(target.address, list(METHODS), 15, functools.partial(_structured, recipient=target.node_id),
                               random.Random(99))
            assert seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 0
            assert (await other.ping(target.address)).node_id == target.node_id
            meta, _ = await other.call_stage(target.address, "forward", {"microbatch": 5}, {"x": torch.ones(2)}, 3)
            assert meta["microbatch"] == 5

    run(scenario(), timeout=180)
