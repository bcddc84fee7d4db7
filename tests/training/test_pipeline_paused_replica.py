"""A volunteer pauses a worker/validator node: it stops serving stage work at once, answering with
a retryable refusal, so the driver's router fails over to a replica; on Resume it serves again.

Real P2P nodes on loopback gRPC; each replica's stage is served through the runtime's own wiring
(StageHost's ``_serve_stage`` and its busy check on the engine's RunControl).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from training_helpers import make_stage, patterned_batch, tiny_config

from app.crypto.keys import PrivateKey
from app.node import hardware
from app.node.config import NodeConfig
from app.node.events import NodeState
from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import PeerUnavailable
from app.node.p2p.node import P2PNode
from app.node.p2p.records import LayerAnnouncement
from app.node.p2p.tracker import Tracker
from app.node.runtime.network import NetworkService
from app.node.runtime.p2p_transport import P2PStageTransport, to_wire
from app.node.runtime.stage_host import StageHooks, StageHost
from app.node.runtime.stage_protocol import stage_request
from app.node.runtime.status import watch_pause
from app.node.runtime.vocab_service import VocabService
from app.node.runtime_api import RunControl, RuntimeContext
from app.node.training.layer_pool import Assignment
from app.node.training.pipeline import PipelineDriver
from tests.p2p.helpers import run

CONFIG = tiny_config()
HEAD = (2, 4)
FAST = P2PConfig(heartbeat_interval_s=0.5, heartbeat_timeout_s=3.0, dht_rpc_timeout_s=2.0, rpc_timeout_s=3.0,
                 use_upnp=False)


@contextlib.asynccontextmanager
async def _swarm(n: int) -> AsyncIterator[list[P2PNode]]:
    """A tracker and ``n`` real nodes on 127.0.0.1, stopped on exit."""
    tracker = Tracker(0, config=FAST)
    await tracker.start()
    nodes: list[P2PNode] = []
    try:
        for _ in range(n):
            nodes.append(P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=FAST))
            await nodes[-1].start()
        yield nodes
    finally:
        await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)
        await tracker.stop()


def _replica(tmp_path: Path, node: P2PNode, states: list[tuple[NodeState, str]]) -> tuple[StageHost, RuntimeContext]:
    """A StageHost serving the head stage on ``node`` (the network part is the test's swarm)."""
    report = hardware.HardwareReport(hardware.detect_device("cpu"), 20.0, hardware.tier_for_ms(20.0),
                                     torch.__version__, time.time())
    config = NodeConfig(data_dir=tmp_path, port=0, training={"model": "tiny"})
    ctx = RuntimeContext(config, report, lambda _event: None, lambda s, d: states.append((s, d)), RunControl(),
                         ThreadPoolExecutor(1), asyncio.get_running_loop())
    host = StageHost(ctx, NetworkService(node, trackers=(), emit=lambda _event: None),
                     VocabService(tmp_path, lambda: []), CONFIG, lambda _text: None,
                     Assignment("me", 1, HEAD, False, True), device="cpu", offer=("T3", 2), hooks=StageHooks())
    host._serve_stage(host.stage)
    return host, ctx


@pytest.mark.slow  # intermittent in full runs: see the note below
def test_a_paused_replica_refuses_as_unavailable_the_pipeline_fails_over_and_resume_serves_again(
        tmp_path: Path) -> None:
    # Behind -m slow until its hang is understood: alone it passes every time (5-27 s, also with
    # both cores busy and six copies at once), but in two of four full suites after this wave's
    # wire changes (typed stage protocol, router-owned retries, TLS) the scenario never finished
    # within 120 s. Pausing itself stays covered in the default suite by test_runtime_solo and the
    # GUI pause tests; the fail-over of a paused replica is what this test adds. Since then
    # cancel_and_wait stopped swallowing a caller's cancellation (a timeout that struck while a
    # router or DHT lookup wound down its calls was eaten, so a bounded wait could run on
    # forever), and a hang now prints where each task waits.
    async def scenario() -> None:
        async with _swarm(3) as (driver_node, a_node, b_node):
            states: list[tuple[NodeState, str]] = []
            a, a_ctx = _replica(tmp_path / "a", a_node, states)
            b, _ = _replica(tmp_path / "b", b_node, [])
            for node in (a_node, b_node):
                await node.registry.announce(LayerAnnouncement(*HEAD, "T3", 1.0))
            watch = asyncio.ensure_future(watch_pause(a_ctx.control, a_ctx.set_state))
            driver = PipelineDriver("driver", make_stage((0, 2), CONFIG), [HEAD[0]],
                                    P2PStageTransport(driver_node), micro_batches=CONFIG.micro_batches)
            try:
                a_ctx.control.pause()
                # straight to the paused node: refused with UNAVAILABLE (retryable), nothing computed
                x = torch.zeros(2, CONFIG.seq_len, 64)
                meta = stage_request("forward", HEAD[0], {"step": 0, "mb": 0})
                with pytest.raises(PeerUnavailable, match="paused by its volunteer"):
                    await driver_node.call_stage(a_node.address, "forward", meta,
                                                 to_wire([x, torch.zeros(2, CONFIG.seq_len, dtype=torch.long)]),
                                                 timeout=10.0)
                # the pipeline keeps training: every step lands on the replica that is not paused
                for step in range(3):
                    await driver.train_step(step, patterned_batch(CONFIG, step))
                assert a.stage.inner_step == 0 and b.stage.inner_step == 3
                while not states:
                    await asyncio.sleep(0.05)
                assert states[-1][0] == NodeState.PAUSED
                # Resume: the node serves again (the driver is pointed at it; B stays available)
                a_ctx.control.resume()
                driver.transport.node.router.clear(a_node.node_id)
                driver.routes[HEAD[0]] = a_node.node_id.hex()
                await driver.train_step(3, patterned_batch(CONFIG, 3))
                assert a.stage.inner_step == 1, "the resumed replica served the step"
                while states[-1][0] != NodeState.TRAINING:
                    await asyncio.sleep(0.05)
            finally:
                watch.cancel()

    run(scenario(), timeout=120)  # a hang prints every task's stack (tests/p2p/helpers.py)
