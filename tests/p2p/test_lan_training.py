"""Two whole nodes on one LAN train together with nothing typed: two network namespaces joined by a
veth pair, a headless node in each, no tracker, bound to every interface (the volunteer's "home
network" choice). Each finds the other by mDNS; whichever started its genesis network keeps it and
the other joins it through the planner (or both plan together when they found each other in
time). The proof of training together: each node's DiLoCo rounds merge the other node's
pseudo-gradients, while both take steps. Needs root and ``ip``; skips with the reason otherwise."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import tomli_w

from app.node.devnet import DEVNET_P2P, devnet_training
from tests.p2p.test_lan_namespaces import _why_not, lan_pair  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "main.py"

pytestmark = pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "runs")

ROUND = re.compile(r"outer round \d+ on layers \S+ \S+ (\d+) contributions accepted \(from ([0-9a-f, ]*)\)")


class HeadlessNode:
    """``main.py --headless --json-events`` inside a namespace; its events are collected as they come."""

    def __init__(self, namespace: str, data_dir: Path) -> None:
        self.events: list[dict] = []
        self.changed = threading.Condition()
        self.log = (data_dir.parent / f"{data_dir.name}.stderr").open("w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, str(MAIN), "--headless", "--json-events",
             "--data-dir", str(data_dir)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.changed:
                self.events.append(event)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, predicate, what: str, timeout: float = 600.0) -> dict:  # noqa: ANN001
        """The first event that satisfies ``predicate`` (the timeout only bounds a hang)."""
        with self.changed:
            self.changed.wait_for(lambda: any(predicate(e) for e in self.events) or self.proc.poll() is not None,
                                  timeout)
            match = next((e for e in self.events if predicate(e)), None)
        if match is None:
            tail = [e.get("message", e.get("event")) for e in self.events[-30:]]
            raise AssertionError(f"never happened: {what}; exit {self.proc.poll()}; last events {tail}")
        return match

    def node_id(self) -> str:
        status = self.wait_for(lambda e: e.get("event") == "log" and "network up as" in e.get("message", ""),
                               "the node joined or started a network")
        return status["message"].split("network up as ")[1].split(";")[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.log.close()


def _merged_from(node: HeadlessNode, other_prefix: str) -> bool:
    def merged(event: dict) -> bool:
        found = ROUND.search(event.get("message", "")) if event.get("event") == "log" else None
        return bool(found and int(found.group(1)) >= 2 and other_prefix[:12] in found.group(2))

    node.wait_for(merged, f"a DiLoCo round that merged {other_prefix[:12]}'s pseudo-gradients")
    return True


def _config(data_dir: Path, lan_wait_s: float) -> None:
    from app.node import hardware

    training = {**devnet_training(2, 400, inner_steps=3), "expected_nodes": 0, "max_layers_per_node": 0}
    config = {"node": {"host": "0.0.0.0", "port": 0, "modes": ["pipeline", "data"]}, "training": training,
              "p2p": {**DEVNET_P2P, "use_upnp": False, "lan_wait_s": lan_wait_s}, "economics": {"preset": "devnet"}}
    data_dir.mkdir(parents=True)
    (data_dir / "config.toml").write_bytes(tomli_w.dumps(config).encode())
    hardware.save_cache(data_dir, _measured())


_MEASURED: list = []


def _measured():  # noqa: ANN202
    """One measurement for both nodes (two at once would measure each other's load)."""
    from app.node import hardware

    if not _MEASURED:
        _MEASURED.append(hardware.measure("cpu"))
    return _MEASURED[0]


@pytest.mark.parametrize("second_starts", ["together", "after the first trains alone"])
def test_two_nodes_on_one_lan_find_each_other_by_mdns_and_train_together(lan_pair, tmp_path,  # noqa: ANN001, F811
                                                                         second_starts: str) -> None:
    (ns_a, _host_a), (ns_b, _host_b) = lan_pair
    later = second_starts != "together"
    # the first node of the later case does not wait for discovery at all: it is alone and trains
    _config(tmp_path / "a", 0.0 if later else 30.0)
    _config(tmp_path / "b", 30.0)
    a = HeadlessNode(ns_a, tmp_path / "a")
    b: HeadlessNode | None = None
    try:
        if later:
            a.wait_for(lambda e: e.get("event") == "step", "the first node trains alone")
            assert any(e.get("event") == "network" and e["peers"] == 0 for e in a.events)
        b = HeadlessNode(ns_b, tmp_path / "b")
        id_a, id_b = a.node_id(), b.node_id()
        for node in (a, b):
            node.wait_for(lambda e: e.get("event") == "step", "a training step")
        # each node's outer rounds take the other's work: training progresses through the other node
        assert _merged_from(a, id_b) and _merged_from(b, id_a)
        for node, other in ((a, id_b), (b, id_a)):
            joined = node.wait_for(lambda e, o=other: e.get("event") == "peer_joined" and e["node_id"].startswith(o),
                                   "the other node appears as a peer")
            assert not joined["address"].startswith(("0.0.0.0", "127.")), joined  # its LAN address, not 0.0.0.0
        if later:  # the lone node kept its network; the newcomer took its layers from it
            assert a.wait_for(lambda e: e.get("event") == "layers", "layers")["first_layer"] == 0
            assert any("downloading layers" in e.get("activity", "") for e in b.events)
    finally:
        a.stop()
        if b is not None:
            b.stop()
