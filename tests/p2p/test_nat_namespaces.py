"""NAT traversal in real network namespaces (needs root, iproute2 and iptables; skips otherwise).

A "public" namespace holds the tracker and a relay; two homes sit behind their own routers doing
MASQUERADE (nat_lab.py). One node in each home registers with the tracker, which cannot dial
them back, so both serve through the relay; they find each other through the tracker, punch a
direct path each way (holepunch.py) and then train a two-stage model together over it.
"""

from __future__ import annotations

import pytest

from .nat_lab import HOME_IPS, PUBLIC_IP, ROUTER_IPS, TRACKER, LabProcess, LabUnavailable, NatLab, why_not

pytestmark = pytest.mark.skipif(bool(why_not()), reason=why_not() or "runs")
STEPS = 20


def test_two_nodes_behind_different_nats_punch_through_and_train_over_the_direct_path() -> None:
    try:
        lab = NatLab()
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    procs: list[LabProcess] = []
    try:
        procs.append(LabProcess(lab.pub, "public", PUBLIC_IP))
        a = LabProcess(lab.homes[0], "home", HOME_IPS[0], TRACKER, "0", str(STEPS))
        b = LabProcess(lab.homes[1], "home", HOME_IPS[1], TRACKER, "1", str(STEPS))
        procs += [a, b]
        assert procs[0].wait_for(lambda x: "tracker" in x)["tracker"] == TRACKER
        hello_a, hello_b = (p.wait_for(lambda x: "node_id" in x) for p in (a, b))
        for hello, router in ((hello_a, ROUTER_IPS[0]), (hello_b, ROUTER_IPS[1])):
            # the tracker saw each node at its router and could not dial it: it serves via the relay
            assert hello["observed"] == router and not hello["reachable"] and hello["address"] == "", hello
            assert hello["relay"].startswith(f"{PUBLIC_IP}:"), hello
        # each punched its own direct path to the other's router, port preserved by the NAT
        punch_a = a.wait_for(lambda x: "punch" in x)["punch"]
        punch_b = b.wait_for(lambda x: "punch" in x)["punch"]
        assert punch_a["peer"] == hello_b["node_id"] and punch_b["peer"] == hello_a["node_id"]
        assert punch_a["direct"] and punch_a["address"].startswith(f"{ROUTER_IPS[1]}:"), punch_a
        assert punch_b["direct"] and punch_b["address"].startswith(f"{ROUTER_IPS[0]}:"), punch_b
        done = a.wait_for(lambda x: x.get("done"), timeout=180)
        assert done
        steps = [x for x in a.lines if "step" in x]
        assert [s["step"] for s in steps] == list(range(STEPS))
        assert all(s["direct"] for s in steps), steps  # every step went over the punched path
        first, last = steps[0]["loss"], steps[-1]["loss"]
        assert last < 0.7 * first, (first, last)  # it trained
        # the activations and gradients crossed router to router, not through the relay
        assert lab.direct_bytes(0) > STEPS * 32 * 64 * 4 and lab.direct_bytes(1) > STEPS * 32 * 64 * 4
        assert lab.leaked_packets() == 0
    finally:
        for proc in procs:
            proc.stop()
        lab.close()
