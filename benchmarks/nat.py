"""NAT traversal figures in network namespaces (root only; JSON on stdout).

    sudo .venv/bin/python benchmarks/nat.py [--trials 20] [--rst-nat]

Builds tests/p2p/nat_lab.py's lab (a public namespace with a tracker and a relay, two homes
behind their own MASQUERADE routers), starts one node in each home, and from home 1 runs
``--trials`` fresh hole punches towards home 2 (each after closing the previous direct path, each
on a new punch port). Reports the success rate, attempts until success, the time from the first
CONNECT to the first call answered over the direct path, every failure's reason, and tensor
transfer (8 MiB tensors to a stage) and the round trip of a small call over the relay and over
the punched path, alternating three times in the same run, as ratios. ``--rst-nat`` makes the routers answer unsolicited SYNs with a reset (Linux's
default) instead of dropping them as RFC 5382 asks, to show what that costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.p2p.nat_lab import HOME_IPS, PUBLIC_IP, TRACKER, LabProcess, NatLab, why_not  # noqa: E402


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _ratio(top: list[float], bottom: list[float]) -> float | None:
    """Median of the per-round ratios (each pair measured back to back)."""
    pairs = [t / b for t, b in zip(top, bottom, strict=False) if b]
    return round(statistics.median(pairs), 2) if pairs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rst-nat", action="store_true")
    args = parser.parse_args()
    reason = why_not()
    if reason:
        print(json.dumps({"skipped": reason}))
        sys.exit(2)
    started = time.perf_counter()
    with NatLab(rst_nat=args.rst_nat) as lab:
        procs: list[LabProcess] = []
        try:
            procs.append(LabProcess(lab.pub, "public", PUBLIC_IP))
            peer = LabProcess(lab.homes[1], "home", HOME_IPS[1], TRACKER, "1", "0")
            procs.append(peer)
            peer.wait_for(lambda x: "node_id" in x)
            runner = LabProcess(lab.homes[0], "bench", HOME_IPS[0], TRACKER, str(args.trials))
            procs.append(runner)
            result = runner.wait_for(lambda x: "bench" in x, timeout=60 + 30 * args.trials)["bench"]
            leaked = lab.leaked_packets()
        finally:
            for proc in procs:
                proc.stop()
    outcomes = result["outcomes"]
    ok = [o for o in outcomes if o["direct"]]
    seconds = sorted(o["seconds"] for o in ok)
    attempts = [o["attempts"] for o in ok]
    print(json.dumps({
        "nat": "RST on unsolicited SYN (Linux default)" if args.rst_nat else "port-preserving MASQUERADE, "
               "unsolicited SYN dropped (RFC 5382 REQ-4)",
        "trials": len(outcomes),
        "success_rate": len(ok) / len(outcomes) if outcomes else 0.0,
        "first_attempt_share_of_successes": attempts.count(1) / len(ok) if ok else 0.0,
        "attempts_until_success": {str(n): attempts.count(n) for n in sorted(set(attempts))},
        "seconds_to_direct": {"p50": statistics.median(seconds) if seconds else None,
                              "max": seconds[-1] if seconds else None},
        "failures": [o["reason"] for o in outcomes if not o["direct"]],
        "transfer_mib_s": {path: _median(result[f"{path}_mib_s"]) for path in ("relayed", "direct")},
        "transfer_direct_over_relayed": _ratio(result["direct_mib_s"], result["relayed_mib_s"]),
        "ping_ms": {path: _median(result[f"{path}_ping_ms"]) for path in ("relayed", "direct")},
        "ping_relayed_over_direct": _ratio(result["relayed_ping_ms"], result["direct_ping_ms"]),
        "packets_leaving_the_lab": leaked,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "wall_s": round(time.perf_counter() - started, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
