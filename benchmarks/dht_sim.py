"""Kademlia lookups on up to 10,000 virtual nodes without sockets, to show hops grow as log N.

Uses the node's own routing code (app/node/p2p/routing.py: RoutingTable and iterative_lookup),
with queries answered in memory instead of over gRPC. Tables are the converged state of a
Kademlia network: every bucket holds up to k contacts drawn at random from the nodes that fall
in it (found by bisecting the sorted id list), as long-running nodes would have learnt them.
A fraction of nodes can be marked dead to measure the lookup success rate under churn.

    .venv/bin/python benchmarks/dht_sim.py                 # N = 100, 1000, 10000
    .venv/bin/python benchmarks/dht_sim.py --sizes 100 1000 --lookups 100 --dead 0.2

Prints one JSON object; ``ratio_to_log2n`` is median hops / log2(N).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.node.p2p.routing import Answer, RoutingTable, iterative_lookup  # noqa: E402


def build_tables(ids: list[bytes], k: int, rng: random.Random) -> dict[bytes, RoutingTable[None]]:
    ints = sorted(int.from_bytes(i, "big") for i in ids)
    tables = {}
    for node_id in ids:
        me = int.from_bytes(node_id, "big")
        table: RoutingTable[None] = RoutingTable(node_id, k)
        for bit in range(255, -1, -1):
            # ids at XOR distance in [2^bit, 2^(bit+1)): same bits above `bit`, opposite at `bit`
            low = ((me >> (bit + 1)) << (bit + 1)) | ((~me) & (1 << bit))
            lo, hi = bisect.bisect_left(ints, low), bisect.bisect_left(ints, low + (1 << bit))
            if hi - lo:
                for value in rng.sample(ints[lo:hi], min(k, hi - lo)):
                    table.add(value.to_bytes(32, "big"), None)
            if hi - lo == 0 and bit < 200 and len(table) >= k:
                break  # no closer nodes exist below this point for a network this size
        tables[node_id] = table
    return tables


async def run_lookups(tables: dict[bytes, RoutingTable[None]], lookups: int, k: int, alpha: int,
                      dead: set[bytes], rng: random.Random) -> dict[str, float]:
    ids = list(tables)
    alive = [i for i in ids if i not in dead]
    hops, queried, found = [], [], 0

    async def query(node_id: bytes, _: None, target: bytes) -> Answer[None]:
        if node_id in dead:
            raise ConnectionError("dead node")
        return Answer(tables[node_id].nearest(target, k))

    for _ in range(lookups):
        start, target = rng.sample(alive, 2)
        result = await iterative_lookup(target, start, tables[start].nearest(target, k),
                                        lambda n, c, t=target: query(n, c, t), k=k, alpha=alpha)
        found += bool(result.closest) and result.closest[0][0] == target
        hops.append(result.hops)
        queried.append(result.queried)
    hops.sort()
    return {
        "hops_mean": round(statistics.mean(hops), 3),
        "hops_median": statistics.median(hops),
        "hops_p99": hops[min(len(hops) - 1, int(0.99 * len(hops)))],
        "rpcs_per_lookup": statistics.mean(queried),
        "success_rate": found / lookups,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--alpha", type=int, default=3)
    parser.add_argument("--dead", type=float, default=0.0, help="fraction of nodes killed before lookups")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    rows = []
    for n in args.sizes:
        t0 = time.perf_counter()
        ids = [rng.getrandbits(256).to_bytes(32, "big") for _ in range(n)]
        tables = build_tables(ids, args.k, rng)
        dead = set(rng.sample(ids, int(args.dead * n)))
        stats = asyncio.run(run_lookups(tables, args.lookups, args.k, args.alpha, dead, rng))
        log2n = math.log2(n)
        rows.append({"nodes": n, "log2_n": round(log2n, 2), "ceil_log2_n": math.ceil(log2n), **stats,
                     "ratio_to_log2n": round(stats["hops_median"] / log2n, 3),
                     "seconds": round(time.perf_counter() - t0, 1)})
    print(json.dumps({"benchmark": "dht_sim", "k": args.k, "alpha": args.alpha, "dead_fraction": args.dead,
                      "lookups_per_size": args.lookups, "pid": os.getpid(), "results": rows}, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
