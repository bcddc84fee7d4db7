"""Kademlia over real loopback sockets: many nodes in one process, each with its own gRPC port."""

import asyncio
import os
import time

import grpc
import pytest

from app.crypto.keys import PrivateKey
from app.node.p2p.auth import sign_message
from app.node.p2p.dht_service import STORE
from app.node.p2p.errors import PeerRejected
from app.node.p2p.protocol import PROTOCOL_VERSION, pb2
from app.node.p2p.records import sign_value

from .helpers import run, swarm


def test_store_and_get_across_fifty_nodes():
    async def scenario():
        async with swarm(50) as (_, nodes):
            keys = [os.urandom(32) for _ in range(5)]
            for i, key in enumerate(keys):
                stored = await nodes[i].dht.store(key, f"value-{i}".encode(), ttl=60)
                assert stored >= 10  # replicated on (up to) k = 20 of the closest nodes
            for i, key in enumerate(keys):
                reader = nodes[-1 - i]
                assert await reader.dht.get(key) == [f"value-{i}".encode()]
                assert reader.dht.last_lookup.hops <= 6
            assert await nodes[7].dht.get(os.urandom(32)) == []

    run(scenario(), timeout=120)


def test_lookups_still_succeed_after_the_tracker_is_gone():
    async def scenario():
        async with swarm(20) as (tracker, nodes):
            key = os.urandom(32)
            await tracker.stop()
            assert await nodes[0].dht.store(key, b"still here", ttl=60) > 0
            assert await nodes[19].dht.get(key) == [b"still here"]
            target = nodes[11].node_id
            result = await nodes[3].dht.find_node(target)
            assert result.closest[0][0] == target
            assert nodes[5].peers()  # discovery keeps working from the DHT alone

    run(scenario())


def test_newest_value_of_a_publisher_replaces_the_older_one():
    async def scenario():
        async with swarm(8) as (_, nodes):
            key = os.urandom(32)
            await nodes[0].dht.store(key, b"v1", ttl=60)
            await asyncio.sleep(0.01)
            await nodes[0].dht.store(key, b"v2", ttl=60)
            await nodes[1].dht.store(key, b"other publisher", ttl=60)
            assert sorted(await nodes[5].dht.get(key)) == [b"other publisher", b"v2"]

    run(scenario())


def test_store_of_value_with_a_forged_publisher_signature_is_refused():
    async def scenario():
        async with swarm(3, tracker=False) as (_, (a, b, _c)):
            good = sign_value(a.key, os.urandom(32), b"mine", ttl=60)
            forged = bytearray(good.raw)
            forged[-80] ^= 0xFF  # flips a byte of the value under the signature
            request = pb2.StoreRequest(protocol_version=PROTOCOL_VERSION, value=bytes(forged))
            sign_message(a.key, STORE, request, b.node_id)
            with pytest.raises(PeerRejected) as err:
                await a.client.unary(b.address, STORE, request, 2)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert len(b.dht.values) == 0

    run(scenario())


def test_value_expires_after_its_ttl():
    async def scenario():
        async with swarm(4) as (_, nodes):
            key = os.urandom(32)
            short = sign_value(PrivateKey.generate(), key, b"short", ttl=0.3)
            lasting = sign_value(PrivateKey.generate(), key, b"lasting", ttl=60)
            for node in nodes:
                # stored as the store handler does, at the moment it was signed: however slowly this
                # machine gets here, the short value is not refused as already expired
                assert node.dht.values.put(short, now=short.timestamp)
                assert node.dht.handle_store(lasting.raw)
            await asyncio.sleep(max(0.0, short.expires - time.time()) + 0.05)  # the real clock passes its expiry
            # the lasting value still answers; no node (this one or those asked) hands out the expired one
            assert await nodes[2].dht.get(key) == [b"lasting"]

    run(scenario())
