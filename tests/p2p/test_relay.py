"""A node that does not listen (``--no-listen``) is reached through its relay."""

import os

import torch

from app.crypto.keys import PrivateKey
from app.node.p2p.node import P2PNode
from app.node.p2p.records import LayerAnnouncement

from .helpers import FAST, double, eventually, run, swarm


def test_no_listen_node_is_reachable_through_its_relay():
    async def scenario():
        async with swarm(4) as (tracker, nodes):
            hidden = P2PNode(PrivateKey.generate(), trackers=[tracker.address], listen=False, config=FAST)
            await hidden.start()
            try:
                assert hidden.address == ""
                assert hidden.relay_address in {n.address for n in nodes}
                hidden.set_stage_handler(double)
                await hidden.registry.announce(LayerAnnouncement(0, 1, "T4", 1.0))
                caller = next(n for n in nodes if n.address != hidden.relay_address)
                [record] = await caller.registry.who_holds(0)
                assert record.node_id == hidden.node_id and record.address == "" and record.relay
                meta, tensors = await caller.call_stage(record, "forward", {"microbatch": 3},
                                                        {"x": torch.ones(3 << 18)}, timeout=5)
                assert meta["microbatch"] == 3 and torch.equal(tensors["y"], torch.full((3 << 18,), 2.0))
                assert (await caller.ping(record)).node_id == hidden.node_id
                # the hidden node is a full DHT member: it stores and finds values too
                key = os.urandom(32)
                assert await hidden.dht.store(key, b"from behind NAT", ttl=30) > 0
                assert await caller.dht.get(key) == [b"from behind NAT"]
            finally:
                await hidden.stop()

    run(scenario())


def test_unreachable_listener_falls_back_to_a_relay():
    async def scenario():
        async with swarm(2) as (tracker, nodes):
            # advertises an address nobody can dial: the tracker's dial-back fails
            node = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=FAST,
                           advertise="127.0.0.1:1")
            await node.start()
            try:
                record = node.record()
                assert node.tracker_client.reachable is False
                assert record.address == "" and record.relay in {n.address for n in nodes}
                assert (await nodes[0].ping(record)).node_id == node.node_id
            finally:
                await node.stop()

    run(scenario())


def test_hidden_node_moves_to_another_relay_when_its_relay_dies():
    async def scenario():
        async with swarm(4) as (tracker, nodes):
            hidden = P2PNode(PrivateKey.generate(), trackers=[tracker.address], listen=False, config=FAST)
            await hidden.start()
            try:
                first = hidden.relay_address
                await next(n for n in nodes if n.address == first).kill()

                async def moved() -> bool:
                    return hidden.relay_address not in ("", first) and hidden.tunnel.alive

                await eventually(moved, what="the hidden node moved to another relay")  # 4 s was not enough under load
                caller = next(n for n in nodes if n.address not in (first, hidden.relay_address))
                assert (await caller.ping(hidden.record())).node_id == hidden.node_id
            finally:
                await hidden.stop()

    run(scenario())


def test_node_bound_to_all_interfaces_advertises_the_address_the_tracker_saw():
    async def scenario():
        async with swarm(1) as (tracker, (peer,)):
            node = P2PNode(PrivateKey.generate(), host="0.0.0.0", trackers=[tracker.address], config=FAST)
            await node.start()
            try:
                assert node.record().address == f"127.0.0.1:{node.port}"
                assert node.tracker_client.reachable
                assert (await peer.ping(node.record())).node_id == node.node_id
            finally:
                await node.stop()

    run(scenario())


def test_a_node_bound_to_every_interface_names_a_dialable_address_never_0000():
    async def scenario():
        from app.node.p2p.addresses import primary_address

        node = P2PNode(PrivateKey.generate(), host="0.0.0.0", config=FAST)
        named = P2PNode(PrivateKey.generate(), host="0.0.0.0", config=FAST, advertise_host="127.0.0.1")
        await node.start()
        await named.start()
        try:
            host = node.record().address.rpartition(":")[0]
            assert host == (primary_address() or "127.0.0.1") and host != "0.0.0.0"
            assert named.record().address == f"127.0.0.1:{named.port}"  # the volunteer's advertise_host
            assert (await named.ping(node.record())).node_id == node.node_id  # and it answers there
        finally:
            await node.stop()
            await named.stop()

    run(scenario())
