"""Generation through holders in their own processes (tiny model, loopback, real gRPC + TLS):
the tokens equal in-process greedy generation, also when a stage is killed mid-generation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from app.crypto.keys import PrivateKey
from app.node.p2p.node import P2PNode
from app.node.p2p.tracker import Tracker
from app.node.runtime.inference_client import RemoteGenerator
from tests.inference.helpers import ARCH, PROMPT, RANGES, SEED, reference_tokens
from tests.p2p.helpers import FAST, eventually, run

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "inference" / "holder_process.py"
TOKENS = 10


async def _spawn(tracker: str, layer_range: tuple[int, int]) -> tuple[subprocess.Popen, bytes]:
    proc = subprocess.Popen([sys.executable, str(SCRIPT), tracker, str(layer_range[0]), str(layer_range[1]),
                             str(SEED)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline), 120)
    if not line:
        raise AssertionError(f"holder of {layer_range} exited with {proc.wait()}")
    return proc, bytes.fromhex(line.split()[1])


def test_generation_through_four_holder_processes_survives_a_killed_stage() -> None:
    expected = reference_tokens(TOKENS)

    async def scenario() -> None:
        tracker = Tracker(0, config=FAST)
        await tracker.start()
        procs: dict[bytes, subprocess.Popen] = {}
        client = P2PNode(PrivateKey.generate(), trackers=[tracker.address], config=FAST)
        try:
            # one holder per stage, and a replica of the middle stage
            for layer_range in [*RANGES, RANGES[1]]:
                proc, node_id = await _spawn(tracker.address, layer_range)
                procs[node_id] = proc
            await client.start()

            async def announced() -> bool:
                held = [r for r in await client.who_holds(1) if r.layer_start == 1]
                return len(held) == 2 and all([await client.who_holds(r[0]) for r in RANGES])

            await eventually(announced, timeout=120, what="four holders announced")

            unbroken = await RemoteGenerator(client, ARCH).generate(PROMPT, TOKENS, temperature=0)
            assert unbroken.tokens == expected and unbroken.replacements == 0

            generator = RemoteGenerator(client, ARCH)
            killed: list[bytes] = []

            def kill_middle(index: int, _token: int) -> None:
                if index == 3:  # after the fourth token: the middle stage's holder dies
                    victim = generator.holders_now()[1]
                    procs[victim].kill()
                    procs[victim].wait()
                    killed.append(victim)

            broken = await generator.generate(PROMPT, TOKENS, temperature=0, on_token=kill_middle)
            assert broken.tokens == expected  # no token lost or repeated
            assert broken.replacements == 1
            assert killed and broken.holders[1] == [killed[0].hex(), generator.holders_now()[1].hex()]
        finally:
            await client.stop()
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            await tracker.stop()

    run(scenario(), timeout=300)
