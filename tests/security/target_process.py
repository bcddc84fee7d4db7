"""A target node in its own process, so its memory can be measured alone.

Usage: python tests/security/target_process.py CONFIG_JSON. Serves a doubling forward stage with
the P2PConfig fields given; prints ``address node_id_hex`` once listening, then serves until killed.
"""

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.crypto.keys import PrivateKey  # noqa: E402
from app.node.p2p.config import P2PConfig  # noqa: E402
from app.node.p2p.node import P2PNode  # noqa: E402
from tests.p2p.helpers import FAST, double  # noqa: E402


async def main(overrides: dict) -> None:
    config = P2PConfig(**{**{f: getattr(FAST, f) for f in FAST.__dataclass_fields__}, **overrides})
    node = P2PNode(PrivateKey.generate(), config=config)
    node.set_stage_handler(double)
    await node.start()
    print(node.address, node.node_id.hex(), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
