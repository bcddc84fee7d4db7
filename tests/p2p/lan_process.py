"""One node for the LAN namespace test: ``python -m tests.p2p.lan_process HOST SERVICE_TYPE``.

Runs a NetworkService bound to HOST with no tracker and LAN discovery as a volunteer gets it (no
explicit interfaces: it advertises on HOST because HOST is a LAN address), prints one JSON line
``{"node_id": ..., "peers": [...]}`` whenever its peer list changes, and stops when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys

from app.crypto.keys import PrivateKey
from app.node.runtime.network import NetworkService


async def main(host: str, service: str) -> None:
    net = NetworkService.open(PrivateKey.generate(), host=host, port=0, trackers=(), listen=True,
                              p2p={"use_upnp": False, "heartbeat_interval_s": 0.5}, emit=lambda _e: None,
                              lan_service=service)
    await net.start("T3", 2)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    try:
        print(json.dumps({"node_id": net.node_id, "lan": net.lan.describe() if net.lan else "none",
                          "peers": []}), flush=True)
        seen: list[str] = []
        while not stdin_closed.done():
            peers = sorted(f"{r.node_id.hex()}@{r.dial}" for r in await net.peers())
            if peers != seen:
                seen = peers
                print(json.dumps({"node_id": net.node_id, "peers": peers}), flush=True)
            await asyncio.sleep(0.1)
    finally:
        await net.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
