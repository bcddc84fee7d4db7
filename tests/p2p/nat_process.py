"""One process of the NAT lab (tests/p2p/nat_lab.py); JSON lines on stdout, stops when stdin closes.

``public HOST``: a tracker and a relay node on HOST; prints ``{"tracker": addr}``.
``home HOST TRACKER STAGE STEPS``: a node in a home, holding stage STAGE (0 or 1) of a two-stage
model. The stage-1 node computes the loss and its own step for every micro-batch it is sent; the
stage-0 node drives STEPS training steps through it and prints each step's loss and whether the
peer was reached directly. Each node also pings the other, so each punches its own direct path.
Every hole-punch outcome is printed as ``{"punch": {...}}``.
``bench HOST TRACKER TRIALS`` (stage 0 of benchmarks/nat.py, against a ``home ... 1 0`` peer):
TRIALS fresh punches towards the peer, each after closing the last direct path, then tensor
transfer timed over the relay and over a direct path; prints ``{"bench": {...}}``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

import torch

from app.crypto.keys import PrivateKey
from app.node.p2p.client import Route
from app.node.p2p.config import P2PConfig
from app.node.p2p.errors import P2PError
from app.node.p2p.holepunch import PunchOutcome
from app.node.p2p.node import P2PNode
from app.node.p2p.records import LayerAnnouncement
from app.node.p2p.tracker import Tracker
from tests.p2p.nat_lab import TRACKER_PORT

CONFIG = P2PConfig(heartbeat_interval_s=0.5, heartbeat_timeout_s=10.0, rpc_timeout_s=5.0, use_upnp=False,
                   lan_discovery=False)
BATCH, WIDTH = 32, 64


def say(**fields: Any) -> None:
    print(json.dumps({**fields, "t": time.monotonic()}), flush=True)


def _outcome(o: PunchOutcome) -> None:
    say(punch={"peer": o.peer.hex(), "direct": o.direct, "attempts": o.attempts, "seconds": o.seconds,
               "address": o.address, "reason": o.reason})


async def until_stdin_closes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def public(host: str) -> None:
    tracker = Tracker(TRACKER_PORT, host=host, config=CONFIG)
    await tracker.start()
    relay = P2PNode(PrivateKey.generate(), host=host, trackers=[tracker.address], config=CONFIG)
    await relay.start()
    say(tracker=tracker.address, relay=relay.address)
    try:
        await until_stdin_closes()
    finally:
        await relay.stop()
        await tracker.stop()


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed regression task both stages agree on by step number (the target is a function of x)."""
    gen = torch.Generator().manual_seed(step % 8)
    x = torch.randn(BATCH, WIDTH, generator=gen)
    return x, torch.tanh(x[:, :1] - x[:, 1:2])


def stage_one(node: P2PNode) -> None:
    torch.manual_seed(1)
    head = torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Linear(WIDTH, 1))
    opt = torch.optim.SGD(head.parameters(), lr=0.2)

    async def serve(caller: bytes, kind: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor]):  # noqa: ANN202
        if meta.get("sink"):  # transfer benchmark: take the tensor, answer small
            return {"elements": tensors["h"].numel()}, {"grad": torch.zeros(1)}
        h = tensors["h"].detach().requires_grad_(True)
        _, target = batch(int(meta["step"]))
        loss = torch.nn.functional.mse_loss(head(h), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach().item(), "step": meta["step"]}, {"grad": h.grad}

    node.set_stage_handler(serve)


async def drive(node: P2PNode, peer_layer: int, steps: int) -> None:
    torch.manual_seed(0)
    body = torch.nn.Linear(WIDTH, WIDTH)
    opt = torch.optim.SGD(body.parameters(), lr=0.2)
    peer = await find(node, peer_layer)
    for step in range(steps):
        x, _ = batch(step)
        h = body(x)
        direct = peer.node_id in node.client.direct
        meta, tensors = await node.call_stage(peer, "forward", {"step": step}, {"h": h.detach()}, timeout=30)
        opt.zero_grad()
        h.backward(tensors["grad"])
        opt.step()
        say(step=step, loss=meta["loss"], direct=direct)


async def punched(node: P2PNode, peer: bytes, patience_s: float = 30.0) -> None:
    """Until the punch towards ``peer`` ended either way (bounded: the outcome is printed anyway)."""
    deadline = time.monotonic() + patience_s
    assert node.puncher is not None
    while time.monotonic() < deadline and not any(o.peer == peer for o in node.puncher.outcomes):
        await asyncio.sleep(0.05)


async def find(node: P2PNode, layer: int):  # noqa: ANN201
    while True:
        try:
            found = [r for r in await node.who_holds(layer) if r.node_id != node.node_id]
        except P2PError:
            found = []
        if found:
            return found[0]
        await asyncio.sleep(0.2)


async def transfer(node: P2PNode, peer: Any, mib: int, rounds: int) -> float:
    """MiB/s of ``rounds`` tensors of ``mib`` MiB sent to ``peer`` (answered small)."""
    payload = torch.randn(mib << 18)
    await node.call_stage(peer, "forward", {"sink": True}, {"h": payload}, timeout=120)  # warm the path
    start = time.perf_counter()
    for _ in range(rounds):
        await node.call_stage(peer, "forward", {"sink": True}, {"h": payload}, timeout=120)
    return mib * rounds / (time.perf_counter() - start)


async def bench(node: P2PNode, trials: int) -> None:
    assert node.puncher is not None
    node.client.on_relayed = None  # punches happen only when this benchmark asks
    peer = await find(node, 1)
    while node.puncher.in_progress:  # one the node's own start may have begun
        await asyncio.sleep(0.05)
    route = Route.of(peer)
    await node.puncher.drop(peer.node_id)
    outcomes = []
    for _ in range(trials):
        await node.puncher.drop(peer.node_id)
        outcomes.append(await node.puncher.upgrade(route))
    # relayed and direct alternate, so the machine's load changes weigh on both alike
    figures: dict[str, list[float]] = {"relayed_mib_s": [], "direct_mib_s": [], "relayed_ping_ms": [],
                                       "direct_ping_ms": []}
    direct_ok = True
    for _ in range(3):
        await node.puncher.drop(peer.node_id)
        figures["relayed_ping_ms"].append(await ping_ms(node, peer))
        figures["relayed_mib_s"].append(await transfer(node, peer, 8, 4))
        direct_ok = direct_ok and (await node.puncher.upgrade(route)).direct
        if direct_ok:
            figures["direct_ping_ms"].append(await ping_ms(node, peer))
            figures["direct_mib_s"].append(await transfer(node, peer, 8, 4))
    say(bench={"outcomes": [{"direct": o.direct, "attempts": o.attempts, "seconds": o.seconds,
                             "address": o.address, "reason": o.reason} for o in outcomes],
               "transfer_direct": direct_ok, **figures})


async def ping_ms(node: P2PNode, peer: Any, rounds: int = 20) -> float:
    """Median round trip of a DHT ping (a small signed call and its answer)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await node.ping(peer)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


async def relay_registered(node: P2PNode, tracker: str, patience_s: float = 120.0) -> None:
    """Until the tracker is up and lists a peer (the relay): the homes start while it starts, and
    a home that joined before the relay registered would find nobody to relay through."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        try:
            if await node.tracker_client.peers(tracker):
                return
        except P2PError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"tracker {tracker} listed no relay within {patience_s:.0f} s")


async def home(host: str, tracker: str, stage: int, steps: int, mode: str = "home") -> None:
    node = P2PNode(PrivateKey.generate(), host=host, trackers=[tracker], config=CONFIG, on_punch=_outcome)
    await relay_registered(node, tracker)
    if stage == 1:
        stage_one(node)
    await node.start()
    await node.registry.announce(LayerAnnouncement(stage, stage + 1, "T4", 1.0, ttl=30.0))
    record = node.record()
    say(node_id=node.node_id.hex(), address=record.address if record else "", relay=node.relay_address,
        reachable=node.tracker_client.reachable, observed=node.tracker_client.observed_host)
    stop = asyncio.ensure_future(until_stdin_closes())
    try:
        if mode == "bench":
            await bench(node, steps)
            await stop
            return
        other = await find(node, 1 - stage)
        if stage == 1 and steps == 0:  # the benchmark's peer: serves, punches nothing itself
            await stop
            return
        await node.ping(other)  # a relayed call: this node punches towards the other one
        if stage == 0:
            await punched(node, other.node_id)
            await drive(node, 1, steps)
            say(done=True)
        await stop
    finally:
        stop.cancel()
        await node.stop()


def main(argv: list[str]) -> None:
    if argv[0] == "public":
        asyncio.run(public(argv[1]))
    elif argv[0] == "bench":
        asyncio.run(home(argv[1], argv[2], 0, int(argv[3]), mode="bench"))
    else:
        asyncio.run(home(argv[1], argv[2], int(argv[3]), int(argv[4])))


if __name__ == "__main__":
    main(sys.argv[1:])
