"""Layer registry liveness and swarm-router failover with real nodes on loopback."""

import asyncio

import grpc
import pytest
import torch

from app.node.p2p.errors import NoHolders, PeerRejected, RpcRefusal
from app.node.p2p.records import LayerAnnouncement, parse_layer_announcement
from app.node.p2p.registry import layer_key

from .helpers import FAST, double, eventually, run, swarm


async def _holders(nodes, start: int, end: int, capacity: float = 1.0):
    for node in nodes:
        node.set_stage_handler(double)
        await node.registry.announce(LayerAnnouncement(start, end, "T3", capacity))


def test_registry_lists_holders_with_their_layer_range():
    async def scenario():
        async with swarm(6) as (_, nodes):
            await _holders(nodes[:2], 0, 4)
            await _holders(nodes[2:3], 4, 8)
            first = {r.node_id for r in await nodes[5].registry.who_holds(2)}
            assert first == {nodes[0].node_id, nodes[1].node_id}
            second = await nodes[5].registry.who_holds(4)
            assert [(r.node_id, r.layer_start, r.layer_end, r.tier) for r in second] == \
                [(nodes[2].node_id, 4, 8, "T3")]
            assert sorted((await nodes[4].registry.holders_map()).keys()) == list(range(8))

    run(scenario())


async def _announcements(node, layer: int) -> dict[bytes, LayerAnnouncement]:
    """The newest announcement of each holder of ``layer`` as stored in the DHT (live or not)."""
    newest: dict[bytes, LayerAnnouncement] = {}
    for value in await node.dht.get_values(layer_key(layer)):
        ann = parse_layer_announcement(value.value)
        if ann.node_id not in newest or newest[ann.node_id].timestamp < ann.timestamp:
            newest[ann.node_id] = ann
    return newest


def test_registry_reflects_a_killed_node_within_the_heartbeat_timeout():
    async def scenario():
        async with swarm(6) as (_, nodes):
            victim, survivor, reader = nodes[0], nodes[1], nodes[4]
            await _holders([victim, survivor], 0, 2)
            assert len(await reader.registry.who_holds(0)) == 2
            await victim.kill()
            # "within the heartbeat timeout" without a stopwatch: the victim's last announcement is
            # valid for heartbeat_timeout_s after it was signed and not a moment longer
            last = (await _announcements(reader, 0))[victim.node_id]
            assert last.ttl == FAST.heartbeat_timeout_s
            assert last.is_live(now=last.timestamp + last.ttl - 0.01)
            assert not last.is_live(now=last.timestamp + last.ttl)

            async def only_the_survivor() -> bool:
                return {r.node_id for r in await reader.registry.who_holds(0)} == {survivor.node_id}

            await eventually(only_the_survivor, what="the registry dropping the killed node")
            # the survivor keeps refreshing: still listed after its first TTL ran out
            first = (await _announcements(reader, 1))[survivor.node_id]

            async def refreshed_past_first_ttl() -> bool:
                ann = (await _announcements(reader, 1)).get(survivor.node_id)
                return ann is not None and ann.timestamp >= first.timestamp + first.ttl

            await eventually(refreshed_past_first_ttl, what="the survivor's heartbeat")
            assert [r.node_id for r in await reader.registry.who_holds(1)] == [survivor.node_id]

    run(scenario())


def test_failover_completes_microbatch_after_kill():
    async def scenario():
        async with swarm(4) as (_, nodes):
            victim, replica, caller = nodes[0], nodes[1], nodes[3]
            await _holders([victim, replica], 0, 2)
            started = asyncio.Event()

            async def slow(caller, kind, meta, tensors):
                started.set()
                await asyncio.sleep(30)
                return {}, {}

            victim.set_stage_handler(slow)
            caller.router.order = lambda holders, rng=None: sorted(holders, key=lambda r: r.node_id != victim.node_id)

            async def kill_when_busy():
                await started.wait()
                await victim.kill()

            killer = asyncio.ensure_future(kill_when_busy())
            result = await caller.router.run_stage(0, "forward", {"microbatch": 17}, {"x": torch.arange(4.0)})
            await killer
            # the replica answered (the victim's handler would only have returned {} after 30 s);
            # how fast failover is on a quiet machine is the p2p benchmark's figure, not a test's
            assert result.peer.node_id == replica.node_id
            assert result.meta == {"microbatch": 17, "kind": "forward"}
            assert torch.equal(result.tensors["y"], torch.arange(4.0) * 2)
            assert caller.router.failovers >= 1
            assert caller.router.is_banned(victim.node_id)

    run(scenario())


def test_silent_peer_is_hedged_and_first_good_answer_wins():
    async def scenario():
        async with swarm(3) as (_, nodes):
            hung, replica, caller = nodes
            await _holders([hung, replica], 0, 1)
            events = []
            caller.router.on_failover = events.append
            caller.router.order = lambda holders, rng=None: sorted(holders, key=lambda r: r.node_id != hung.node_id)
            # `hung` reads the request, then goes quiet: no keepalive, no answer, no error
            original = hung.dispatcher.handlers["/neuroshard.v1.Pipeline/Forward"]

            async def mute(requests, info):
                async for _ in requests:
                    pass
                await asyncio.sleep(30)
                yield  # pragma: no cover

            hung.dispatcher.handlers["/neuroshard.v1.Pipeline/Forward"] = mute
            result = await caller.router.run_stage(0, "forward", {"microbatch": 1}, {"x": torch.ones(2)})
            # only a hedge can answer: the muted peer never yields; the event says why it was hedged
            assert result.peer.node_id == replica.node_id
            assert [e.reason for e in events] == ["silent"]
            hung.dispatcher.handlers["/neuroshard.v1.Pipeline/Forward"] = original

    run(scenario())


def test_rejection_reaches_the_caller_as_a_typed_error():
    async def scenario():
        async with swarm(2) as (_, (server, caller)):
            async def refuse(caller, kind, meta, tensors):
                raise RpcRefusal(grpc.StatusCode.ABORTED, "micro-batch from an old step")

            server.set_stage_handler(refuse)
            await server.registry.announce(LayerAnnouncement(0, 1, "T3", 1.0))
            with pytest.raises(PeerRejected, match="old step") as err:
                await caller.router.run_stage(0, "forward", {}, {"x": torch.ones(1)})
            assert err.value.code == grpc.StatusCode.ABORTED
            with pytest.raises(NoHolders):
                await caller.router.run_stage(5, "forward", {}, {"x": torch.ones(1)})

    run(scenario())


def test_ban_backoff_doubles_and_is_capped():
    from app.node.p2p.router import SwarmRouter

    router = SwarmRouter(caller=None, config=FAST)  # type: ignore[arg-type]
    assert [router.ban(b"p") for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    router.clear(b"p")
    assert not router.is_banned(b"p") and router.ban(b"p") == 1


def test_router_sends_a_stage_only_to_holders_starting_at_that_layer():
    async def scenario():
        async with swarm(3) as (_, (wide, exact, caller)):
            await _holders([wide], 0, 4)
            await _holders([exact], 2, 4)
            assert {r.node_id for r in await caller.registry.who_holds(2)} == {wide.node_id, exact.node_id}
            for microbatch in range(4):
                result = await caller.router.run_stage(2, "forward", {"microbatch": microbatch}, {"x": torch.ones(1)})
                assert result.peer.node_id == exact.node_id

    run(scenario())


def test_a_busy_peer_rests_briefly_and_never_escalates():
    """A paused volunteer's node answers "busy": skipped for the initial ban, however often it says
    so, and a busy answer resets the backoff a dead spell had built up."""
    import grpc as grpc_

    from app.node.p2p.errors import BUSY_PREFIX, PeerBusy, PeerUnavailable, error_from_status
    from app.node.p2p.router import SwarmRouter

    router = SwarmRouter(caller=None, config=FAST)  # type: ignore[arg-type]
    busy = error_from_status(grpc_.StatusCode.UNAVAILABLE, BUSY_PREFIX + "this node is paused by its volunteer", "p")
    assert isinstance(busy, PeerBusy) and "paused by its volunteer" in str(busy)
    dead = error_from_status(grpc_.StatusCode.UNAVAILABLE, "connection refused", "p")
    assert isinstance(dead, PeerUnavailable) and not isinstance(dead, PeerBusy)
    assert [router.ban(b"p") for _ in range(4)] == [1, 2, 4, 8]
    assert [router.rest(b"p") for _ in range(5)] == [1, 1, 1, 1, 1] and router.is_banned(b"p")
    assert router.ban(b"p") == 1  # a later real failure starts from the bottom again


def test_grpcs_own_internal_failure_is_retryable_but_a_handlers_internal_error_is_not():
    import grpc as grpc_

    from app.node.p2p.errors import GRPC_CORE_INTERNAL, PeerRejected, PeerUnavailable, error_from_status

    assert isinstance(error_from_status(grpc_.StatusCode.INTERNAL, GRPC_CORE_INTERNAL, "p"), PeerUnavailable)
    handler = error_from_status(grpc_.StatusCode.INTERNAL, "internal error while handling the request", "p")
    assert isinstance(handler, PeerRejected) and handler.code == grpc_.StatusCode.INTERNAL


def test_the_router_is_the_one_holder_cache_and_back_off() -> None:
    """The stage transport keeps no holder list or back-off of its own: it reads the router's."""
    from app.node.p2p.router import REPLAY_MAX_S, SwarmRouter
    from app.node.runtime.p2p_transport import P2PStageTransport

    async def scenario():
        async with swarm(2) as (_, (server, caller)):
            await _holders([server], 0, 2)
            transport = P2PStageTransport(caller, attempts=3)
            assert transport.holders(0) == []  # nothing looked up yet
            await caller.router.holders(0)
            assert transport.holders(0) == [server.node_id.hex()]
            assert [transport.retry_delay(a) for a in range(3)] == [
                SwarmRouter.replay_delay(0), SwarmRouter.replay_delay(1), None]
            assert SwarmRouter.replay_delay(50) == REPLAY_MAX_S

    run(scenario())
