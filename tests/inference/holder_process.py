"""One holder of a tiny-model stage in its own process, serving inference sessions (tests).

Usage: python tests/inference/holder_process.py TRACKER_ADDR FIRST LAST SEED. Builds the stage's
genesis weights (seeded by global layer, as every node does), serves inference sessions through
the real InferenceService on a real P2P node, announces the layers and prints
``<address> <node id hex>`` once announced; serves until killed.
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.crypto.keys import PrivateKey  # noqa: E402
from app.node.model.architecture import ModelArchitecture  # noqa: E402
from app.node.p2p.node import P2PNode  # noqa: E402
from app.node.p2p.records import LayerAnnouncement  # noqa: E402
from app.node.runtime.inference_service import InferenceService  # noqa: E402
from app.node.training.config import TrainingConfig  # noqa: E402
from app.node.training.stage import StageWorker, build_shard  # noqa: E402
from tests.p2p.helpers import FAST  # noqa: E402


async def main(tracker: str, first: int, last: int, seed: int) -> None:
    arch = ModelArchitecture.tiny()
    shard = build_shard(arch, (first, last), with_embedding=first == 0, with_head=last == arch.layers, seed=seed)
    stage = StageWorker(shard, TrainingConfig())
    node = P2PNode(PrivateKey.generate(), trackers=[tracker], config=FAST)
    node.set_inference_handler(InferenceService(lambda: stage).handle)
    await node.start()
    await node.registry.announce(LayerAnnouncement(first, last, "T3", 1.0, ttl=FAST.heartbeat_timeout_s))
    print(node.address, node.node_id.hex(), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
