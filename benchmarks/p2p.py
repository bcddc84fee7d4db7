"""P2P benchmarks on loopback; prints one JSON object.

1. Activation transfer: a 1, 8 and 32 MiB tensor sent as a forward stage call to a node in
   another process (TLS, 1 MiB chunks, signed header), against a plain TCP socket copy of the
   same bytes to the same process, measured in this run (``ratio`` = P2P MB/s / TCP MB/s); also
   against a bare grpc.aio stream of the same bytes over TLS (``ratio_to_bare_grpc``: what our
   codec, signature and keepalives cost on top of gRPC itself, both encrypted) and over plain
   text (``bare_grpc_plain_mib_per_s``: what TLS itself costs). Then the cost of a new
   connection: our client's first call to a node (identity probe + gRPC's TLS handshake + the
   call) against a call on the warm channel, and the same for bare grpc.aio with TLS.
2. DHT: N real nodes (default 200) in this process, each on its own loopback gRPC port, joined
   through a tracker; lookup hops (median, p99) against ceil(log2 N), lookup latency, success
   rate; then 20 % of the nodes are killed at random and the lookups are repeated.
3. Failover: stage servers in their own processes; the one serving a micro-batch is SIGKILLed
   while it computes; time from the kill to the micro-batch completing on a replica (p50, p99),
   against the goal of 200 ms plus one stage compute (DESIGN.md §4).

    .venv/bin/python benchmarks/p2p.py                    # all three, defaults (about a minute)
    .venv/bin/python benchmarks/p2p.py --nodes 60 --skip failover
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import torch  # noqa: E402

from app.crypto.keys import PrivateKey  # noqa: E402
from app.node.p2p.config import MIB, P2PConfig  # noqa: E402
from app.node.p2p.node import P2PNode  # noqa: E402
from app.node.p2p.records import LayerAnnouncement  # noqa: E402
from app.node.p2p.tls import TlsIdentity, pinned_channel, probe  # noqa: E402
from app.node.p2p.tracker import Tracker  # noqa: E402

BENCH = P2PConfig(heartbeat_interval_s=5.0, heartbeat_timeout_s=15.0, dht_rpc_timeout_s=1.0,
                  republish_interval_s=600.0, refresh_interval_s=600.0, use_upnp=False)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------------------ child processes
def _tcp_sink() -> int:
    """Reads an 8-byte length, then that many bytes, then answers one byte; forever."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                while header := conn.recv(8, socket.MSG_WAITALL):
                    remaining = int.from_bytes(header, "big")
                    buf = bytearray(min(remaining, 4 * MIB))
                    view = memoryview(buf)
                    while remaining:
                        remaining -= conn.recv_into(view[: min(remaining, len(buf))])
                    conn.sendall(b"k")

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


async def _bare_grpc_sink() -> int:
    """A bare grpc.aio stream endpoint (raw 1 MiB byte chunks, no codec, no signature): separates
    what gRPC itself costs from what our layer adds."""
    async def sink(chunks, context):
        async for _ in chunks:
            pass
        yield b"k"

    async def echo(request, context):
        return request

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 * MIB)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "bench.Sink", {"Put": grpc.stream_stream_rpc_method_handler(sink),
                       "Echo": grpc.unary_unary_rpc_method_handler(echo)})])
    port = server.add_secure_port("127.0.0.1:0", _SINK_TLS.server_credentials())
    plain = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _KEEP.append(server)
    return port, plain


_KEEP: list[object] = []
_SINK_TLS = TlsIdentity.create(PrivateKey.generate())


async def _serve_sink() -> None:
    node = P2PNode(PrivateKey.generate(), config=BENCH)

    async def stage(caller, kind, meta, tensors):
        return {"elements": sum(t.numel() for t in tensors.values())}, {}

    node.set_stage_handler(stage)
    await node.start()
    tls_port, plain_port = await _bare_grpc_sink()
    print(json.dumps({"node": node.address, "tcp": _tcp_sink(), "grpc": tls_port, "grpc_plain": plain_port}),
          flush=True)
    await asyncio.Event().wait()


async def _serve_stage(tracker: str, compute_ms: float) -> None:
    node = P2PNode(PrivateKey.generate(), trackers=[tracker], config=BENCH)

    async def stage(caller, kind, meta, tensors):
        print(f"busy {meta.get('microbatch')}", flush=True)  # lets the benchmark kill mid-compute
        # the node chosen as victim stays busy until it is killed; every other one takes compute_ms
        await asyncio.sleep(3600 if meta.get("victim") == node.address else compute_ms / 1000.0)
        return {"microbatch": meta.get("microbatch"), "served_by": node.address}, {"y": tensors["x"] + 1}

    node.set_stage_handler(stage)
    await node.start()
    await node.registry.announce(LayerAnnouncement(0, 1, "T3", 1.0))
    print(node.address, flush=True)
    await asyncio.Event().wait()


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


# ------------------------------------------------------------------------------ 1. throughput
def _tcp_copy(port: int, payload: bytes) -> float:
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        conn.sendall(len(payload).to_bytes(8, "big"))
        conn.sendall(payload)
        conn.recv(1)
        return time.perf_counter() - start


async def _bare_grpc_copy(channel: grpc.aio.Channel, payload: bytes) -> float:
    chunks = [payload[i:i + MIB] for i in range(0, len(payload), MIB)]
    start = time.perf_counter()
    async for _ in channel.stream_stream("/bench.Sink/Put")(iter(chunks), timeout=60):
        pass
    return time.perf_counter() - start


async def throughput(sizes_mib: list[int], reps: int) -> dict[str, object]:
    child = _spawn("--serve-sink")
    try:
        ports = json.loads(await asyncio.to_thread(child.stdout.readline))
        sender = P2PNode(PrivateKey.generate(), config=BENCH)
        await sender.start()
        sink_address = f"127.0.0.1:{ports['grpc']}"
        options = [("grpc.max_send_message_length", 8 * MIB)]
        bare = pinned_channel(sink_address, await probe(sink_address, 5), options)
        bare_plain = grpc.aio.insecure_channel(f"127.0.0.1:{ports['grpc_plain']}", options=options)
        rows: list[dict[str, float]] = []
        for mib in sizes_mib:
            tensor = torch.randn(mib * MIB // 2).to(torch.bfloat16)  # activations travel as bf16
            payload = tensor.view(torch.uint8).numpy().tobytes()
            times: dict[str, list[float]] = {"p2p": [], "tcp": [], "grpc": [], "plain": []}
            for rep in range(reps + 1):  # interleaved, so load changes hit all four alike
                start = time.perf_counter()
                meta, _ = await sender.call_stage(ports["node"], "forward", {}, {"h": tensor}, timeout=60)
                elapsed = time.perf_counter() - start
                assert meta["elements"] == tensor.numel()
                tcp = await asyncio.to_thread(_tcp_copy, ports["tcp"], payload)
                tls = await _bare_grpc_copy(bare, payload)
                plain = await _bare_grpc_copy(bare_plain, payload)
                if rep:  # the first round warms up channels and allocators
                    for name, value in (("p2p", elapsed), ("tcp", tcp), ("grpc", tls), ("plain", plain)):
                        times[name].append(value)
            rate = {name: mib / statistics.median(values) for name, values in times.items()}
            rows.append({"mib": mib, "p2p_mib_per_s": round(rate["p2p"], 1), "tcp_mib_per_s": round(rate["tcp"], 1),
                         "ratio": round(rate["p2p"] / rate["tcp"], 3),
                         "bare_grpc_mib_per_s": round(rate["grpc"], 1),
                         "ratio_to_bare_grpc": round(rate["p2p"] / rate["grpc"], 3),
                         "bare_grpc_plain_mib_per_s": round(rate["plain"], 1),
                         "p2p_ms_median": round(statistics.median(times["p2p"]) * 1e3, 2)})
        handshake = await _handshakes(sender, ports["node"], sink_address, reps)
        await bare.close()
        await bare_plain.close()
        await sender.stop()
        return {"transfer": rows, "new_connection": handshake}
    finally:
        child.kill()
        child.wait()


async def _handshakes(sender: P2PNode, node: str, sink: str, reps: int) -> dict[str, float]:
    """Milliseconds a new connection adds: a first call minus a call on the warm channel."""
    first, warm, bare_first, bare_warm, probes = [], [], [], [], []
    echo = {"request_serializer": None, "response_deserializer": None}
    for _ in range(max(reps, 5)):
        await sender.client.forget(node)
        start = time.perf_counter()
        await sender.ping(node)
        first.append(time.perf_counter() - start)
        start = time.perf_counter()
        await sender.ping(node)
        warm.append(time.perf_counter() - start)
        start = time.perf_counter()
        der = await probe(sink, 5)
        probes.append(time.perf_counter() - start)
        async with pinned_channel(sink, der) as channel:
            call = channel.unary_unary("/bench.Sink/Echo", **echo)
            start = time.perf_counter()
            await call(b"x", timeout=10)
            bare_first.append(time.perf_counter() - start)
            start = time.perf_counter()
            await call(b"x", timeout=10)
            bare_warm.append(time.perf_counter() - start)
    ms = {name: statistics.median(v) * 1e3 for name, v in
          (("first", first), ("warm", warm), ("bare_first", bare_first), ("bare_warm", bare_warm), ("probe", probes))}
    return {"new_connection_ms": round(ms["first"] - ms["warm"], 2),
            "identity_probe_ms": round(ms["probe"], 2),
            "bare_grpc_tls_new_connection_ms": round(ms["bare_first"] - ms["bare_warm"], 2),
            "warm_ping_ms": round(ms["warm"], 2)}


# ------------------------------------------------------------------------------ 2. DHT
async def _lookups(nodes: list[P2PNode], keys: dict[bytes, bytes], count: int, rng: random.Random) -> dict:
    hops, latency, ok = [], [], 0
    items = list(keys.items())
    for i in range(count):
        reader = rng.choice(nodes)
        start = time.perf_counter()
        if i % 2 == 0:  # value lookup: a stored key
            key, value = rng.choice(items)
            found = value in [v.value for v in await reader.dht.get_values(key, want=1)]
        else:  # node lookup: another live node's id
            target = rng.choice([n for n in nodes if n is not reader]).node_id
            result = await reader.dht.find_node(target)
            found = bool(result.closest) and result.closest[0][0] == target
        latency.append((time.perf_counter() - start) * 1e3)
        hops.append(reader.dht.last_lookup.hops)
        ok += found
    return {"lookups": count, "hops_median": statistics.median(hops), "hops_p99": _pct(hops, 0.99),
            "latency_ms_median": round(statistics.median(latency), 2),
            "latency_ms_p99": round(_pct(latency, 0.99), 2), "success_rate": ok / count}


async def dht(n: int, lookups: int, kill_fraction: float, seed: int) -> dict:
    rng = random.Random(seed)
    tracker = Tracker(0, config=BENCH)
    await tracker.start()
    nodes: list[P2PNode] = []
    t0 = time.perf_counter()
    try:
        for _ in range(n):
            node = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=BENCH)
            await node.start()
            nodes.append(node)
        join_s = time.perf_counter() - t0
        keys = {os.urandom(32): os.urandom(64) for _ in range(20)}
        for key, value in keys.items():
            await rng.choice(nodes).dht.store(key, value, ttl=600)
        before = await _lookups(nodes, keys, lookups, rng)
        victims = rng.sample(nodes, int(kill_fraction * n))
        await asyncio.gather(*(v.kill() for v in victims))
        survivors = [x for x in nodes if x not in victims]
        after = await _lookups(survivors, keys, lookups, rng)
        return {"nodes": n, "ceil_log2_n": math.ceil(math.log2(n)), "k": BENCH.k, "alpha": BENCH.alpha,
                "join_seconds": round(join_s, 1), "table_size_mean": round(statistics.mean(len(x.dht.table) for x in nodes), 1),
                "before_kill": before, "killed": len(victims), "after_kill": after}
    finally:
        await asyncio.gather(*(x.stop() for x in nodes), return_exceptions=True)
        await tracker.stop()


# ------------------------------------------------------------------------------ 3. failover
async def _busy(proc: asyncio.subprocess.Process, microbatch: int) -> None:
    """Returns once the process printed that it started computing ``microbatch``."""
    while (line := await proc.stdout.readline()) and line.decode().strip() != f"busy {microbatch}":
        pass  # earlier lines: micro-batches it served as a replica


async def _trial(caller: P2PNode, proc: asyncio.subprocess.Process, victim: str, trial: int,
                 dead: set[bytes], compute_ms: float) -> tuple[float | None, dict]:
    """Kill ``victim`` while it computes micro-batch ``trial``; (ms from kill to done, answer meta).
    None when the router had already hedged to a replica before the victim got to work."""
    # the victim is asked first; the replica is whichever the router picks among the rest
    caller.router.order = lambda hs, rng=None: sorted(hs, key=lambda r: (r.address != victim, random.random()))
    task = asyncio.ensure_future(caller.router.run_stage(
        0, "forward", {"microbatch": trial, "victim": victim}, {"x": torch.randn(256, 512)}, exclude=dead))
    busy = asyncio.ensure_future(_busy(proc, trial))
    await asyncio.wait({task, busy}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        busy.cancel()
        return None, task.result().meta
    await asyncio.sleep(random.uniform(0, compute_ms / 1000.0))
    proc.kill()
    killed = time.perf_counter()
    result = await task
    return (time.perf_counter() - killed) * 1e3, result.meta


async def failover(trials: int, compute_ms: float) -> dict:
    tracker = Tracker(0, config=BENCH)
    await tracker.start()
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-stage", tracker.address, str(compute_ms),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(trials + 1)]
    caller = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=BENCH)
    try:
        addresses = [(await p.stdout.readline()).decode().strip() for p in procs]
        await caller.start()
        await caller.bootstrap(addresses)
        holders = {a: (await caller.ping(a)).node_id for a in addresses}
        dead: set[bytes] = set()
        times, hedged_early, wrong = [], 0, 0  # wrong: answers from the node we killed (must stay 0)
        for trial in range(trials):
            elapsed, meta = await _trial(caller, procs[trial], addresses[trial], trial, dead, compute_ms)
            if elapsed is None:
                hedged_early += 1
                continue
            times.append(elapsed)
            wrong += meta["served_by"] == addresses[trial]
            dead.add(holders[addresses[trial]])
        return {"trials": trials, "killed_mid_compute": len(times), "hedged_before_kill": hedged_early,
                "stage_compute_ms": compute_ms, "kill_to_done_ms_p50": round(_pct(times, 0.5), 1),
                "kill_to_done_ms_p99": round(_pct(times, 0.99), 1), "goal_ms": 200 + compute_ms,
                "meets_goal": _pct(times, 0.99) <= 200 + compute_ms, "answered_by_killed_node": wrong,
                "failovers_counted": caller.router.failovers}
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
            await p.wait()
        await caller.stop()
        await tracker.stop()


async def main_async(args: argparse.Namespace) -> dict:
    out: dict = {"benchmark": "p2p", "cpu_count": os.cpu_count()}
    sections = {
        "throughput": lambda: throughput(args.sizes, args.reps),
        "dht": lambda: dht(args.nodes, args.lookups, args.kill, args.seed),
        "failover": lambda: failover(args.failover_trials, args.compute_ms),
    }
    for name, run in sections.items():
        if name not in args.skip:
            try:
                out[name] = await run()
            except Exception as exc:  # one broken section must not hide the others' figures
                out[name] = {"error": repr(exc)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32], help="tensor sizes in MiB")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--lookups", type=int, default=100)
    parser.add_argument("--kill", type=float, default=0.2)
    parser.add_argument("--failover-trials", type=int, default=8)
    parser.add_argument("--compute-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "dht", "failover"])
    parser.add_argument("--serve-sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-stage", nargs=2, metavar=("TRACKER", "COMPUTE_MS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_sink:
        asyncio.run(_serve_sink())
        return 0
    if args.serve_stage:
        asyncio.run(_serve_stage(args.serve_stage[0], float(args.serve_stage[1])))
        return 0
    print(json.dumps(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
