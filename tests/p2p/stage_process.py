"""A node in its own process for multi-process tests: serves a doubling stage for layers [0, 1).

Usage: python tests/p2p/stage_process.py TRACKER_ADDR [compute_seconds]. Prints its address once
joined and announced, then serves until killed.
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.crypto.keys import PrivateKey  # noqa: E402
from app.node.p2p.node import P2PNode  # noqa: E402
from app.node.p2p.records import LayerAnnouncement  # noqa: E402
from tests.p2p.helpers import FAST  # noqa: E402


async def main(tracker: str, compute_s: float) -> None:
    node = P2PNode(PrivateKey.generate(), trackers=[tracker], config=FAST)

    async def stage(caller, kind, meta, tensors):
        await asyncio.sleep(compute_s)
        return {"microbatch": meta.get("microbatch"), "served_by": node.address}, {"y": tensors["x"] * 2}

    node.set_stage_handler(stage)
    await node.start()
    await node.registry.announce(LayerAnnouncement(0, 1, "T3", 1.0))
    print(node.address, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0))
