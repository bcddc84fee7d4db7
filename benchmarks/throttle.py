"""Throttle benchmark: prints one JSON object.

The real training path of a driver (PipelineDriver over a whole tiny-model StageWorker, compute in
the engine's MeteredExecutor, ``RunControl.proceed`` between micro-batches) runs for a fixed
wall-clock window at ``cpu_share`` 1.0 (the baseline), 0.5 and 0.25 in the same process; the
shares take turns in short windows over several rounds so that load from other processes on a
shared machine falls on all of them alike. Reported per share: steps/s, the busy fraction the duty cycle metered, and the process
CPU time over wall-clock time per torch thread, an independent measure from the OS of how much
of the machine the node really took (below the busy fraction when other processes compete for
the cores: a job waiting for a core counts as busy, so the node yields more, never less). Goal:
busy fraction within a few points of the share, steps/s and CPU scaling with it.

    .venv/bin/python benchmarks/throttle.py [--seconds 5 --rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.node.model.architecture import ModelArchitecture  # noqa: E402
from app.node.runtime_api import RunControl  # noqa: E402
from app.node.throttle import DutyCycle, MeteredExecutor  # noqa: E402
from app.node.training.config import TrainingConfig  # noqa: E402
from app.node.training.pipeline import PipelineDriver  # noqa: E402
from app.node.training.stage import StageWorker, build_shard  # noqa: E402

THREADS = 1  # one torch thread: CPU time / wall-clock is then directly the busy fraction


class Runner:
    """One driver (stage, executor, duty cycle) per share, kept across rounds."""

    def __init__(self, share: float) -> None:
        arch = ModelArchitecture.tiny()
        self.config = TrainingConfig.from_dict({"model": "tiny", "batch_size": 8, "micro_batches": 2,
                                                "seq_len": 64, "warmup_steps": 0, "inner_steps": 1000})
        self.share = share
        self.duty = DutyCycle(share)
        self.executor = MeteredExecutor(1, self.duty, thread_name_prefix="bench")
        self.executor.set_threads(THREADS)
        self.stage = StageWorker(build_shard(arch, (0, arch.layers), with_embedding=True, with_head=True, seed=0),
                                 self.config, executor=self.executor)
        generator = torch.Generator().manual_seed(0)
        self.batch = torch.randint(0, arch.vocab, (self.config.batch_size, self.config.seq_len + 1),
                                   generator=generator)
        self.totals = {"steps": 0, "seconds": 0.0, "busy": 0.0, "cpu": 0.0}
        self.step = 0

    def window(self, seconds: float) -> None:
        async def main() -> None:
            control = RunControl(self.duty)
            driver = PipelineDriver("bench", self.stage, [], None, micro_batches=self.config.micro_batches,
                                    proceed=control.proceed)
            if self.step == 0:
                await driver.train_step(0, self.batch)  # warm-up, not counted
                self.step = 1
            await control.proceed()  # start the window with nothing owed
            busy0, cpu0, began = self.duty.busy_total, time.process_time(), time.perf_counter()
            steps = 0
            while time.perf_counter() - began < seconds:
                await driver.train_step(self.step, self.batch)
                self.step += 1
                steps += 1
            await control.proceed()  # the last step's owed idle belongs to the window
            self.totals["steps"] += steps
            self.totals["seconds"] += time.perf_counter() - began
            self.totals["busy"] += self.duty.busy_total - busy0
            self.totals["cpu"] += time.process_time() - cpu0

        asyncio.run(main())

    def result(self) -> dict[str, Any]:
        t = self.totals
        return {"share": self.share, "steps": t["steps"], "steps_per_s": round(t["steps"] / t["seconds"], 3),
                "busy_fraction": round(t["busy"] / t["seconds"], 3),
                "cpu_fraction": round(t["cpu"] / t["seconds"] / THREADS, 3), "seconds": round(t["seconds"], 1)}

    def close(self) -> None:
        self.executor.release()
        self.executor.shutdown(wait=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one window")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    runners = [Runner(share) for share in (1.0, 0.5, 0.25)]
    try:
        for _ in range(args.rounds):
            for runner in runners:
                runner.window(args.seconds)
    finally:
        for runner in runners:
            runner.close()
    baseline, *others = [r.result() for r in runners]
    out: dict[str, Any] = {"baseline": baseline, "load_average_1min": round(os.getloadavg()[0], 2),
                           "cores": os.cpu_count()}
    for r in others:
        out[f"share_{r['share']}"] = {
            **r,
            "steps_ratio_vs_baseline": round(r["steps_per_s"] / baseline["steps_per_s"], 3),
            "cpu_ratio_vs_baseline": round(r["cpu_fraction"] / baseline["cpu_fraction"], 3),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
