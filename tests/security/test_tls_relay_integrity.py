"""A relay terminates TLS: a relayed tensor stream carries a signed digest, and a relay that
alters the data is caught. Receive buffers are reused only once no tensor views them."""

import gc

import grpc
import pytest
import torch

from app.crypto.keys import PrivateKey
from app.node.p2p.errors import PeerRejected
from app.node.p2p.node import P2PNode
from app.node.p2p.protocol import pb2
from app.node.p2p.relay import RelayService
from app.node.p2p.tensor_codec import BufferPool
from app.node.p2p.wire import _DATA_TAG
from tests.p2p.helpers import FAST, double, run, swarm


def _flip_first_data_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every relay alter one byte of the first data chunk it passes on."""
    original = RelayService._pump

    async def tampering(frames, tunnel, call_id):
        async def altered():
            done = False
            async for frame in frames:
                raw = frame.message
                if not done and raw[:1] == _DATA_TAG and len(raw) > 8:
                    raw = raw[:-1] + bytes([raw[-1] ^ 0xFF])
                    done = True
                yield pb2.RelayFrame(message=raw, end=frame.end)

        await original(altered(), tunnel, call_id)

    monkeypatch.setattr(RelayService, "_pump", staticmethod(tampering))


async def _hidden_record(tracker, nodes):
    hidden = P2PNode(PrivateKey.generate(), trackers=[tracker.address], listen=False, config=FAST)
    await hidden.start()
    hidden.set_stage_handler(double)
    caller = next(n for n in nodes if n.address != hidden.relay_address)
    return hidden, caller, hidden.record()


def test_relayed_stream_with_its_signed_trailer_is_served():
    async def scenario():
        async with swarm(2) as (tracker, nodes):
            hidden, caller, record = await _hidden_record(tracker, nodes)
            try:
                meta, out = await caller.call_stage(record, "forward", {"microbatch": 8}, {"x": torch.ones(3 << 18)}, 10)
                assert meta["microbatch"] == 8 and torch.equal(out["y"], torch.full((3 << 18,), 2.0))
            finally:
                await hidden.stop()

    run(scenario())


def test_a_relay_that_alters_the_payload_is_caught_by_the_signed_digest(monkeypatch):
    _flip_first_data_byte(monkeypatch)

    async def scenario():
        async with swarm(2) as (tracker, nodes):
            hidden, caller, record = await _hidden_record(tracker, nodes)
            try:
                with pytest.raises(PeerRejected) as err:
                    await caller.call_stage(record, "forward", {}, {"x": torch.ones(1 << 18)}, 10)
                assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
                assert "digest" in err.value.reason
            finally:
                await hidden.stop()

    run(scenario())


def test_receive_buffer_is_reused_only_after_the_last_tensor_viewing_it_is_gone():
    pool = BufferPool(max_bytes=1 << 20)
    first = pool.take(4096)
    address = first.ctypes.data
    tensor = torch.from_numpy(first[:1024])  # a tensor handed to a handler keeps the buffer
    del first
    gc.collect()
    second = pool.take(4096)
    assert second.ctypes.data != address and pool.free_bytes == 0
    del tensor
    gc.collect()
    assert pool.free_bytes == 4096
    assert pool.take(4096).ctypes.data == address  # the same, already mapped memory
    del second
    gc.collect()
    assert pool.free_bytes <= 1 << 20
