"""LAN discovery across a real link: two network namespaces joined by a veth pair, one node in
each, bound to its LAN address (not loopback), no tracker and no address typed anywhere. Needs
root and ``ip``; skips with the reason otherwise."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _why_not() -> str:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip) to create network namespaces"
    return ""


pytestmark = pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "runs")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def lan_pair() -> Iterator[tuple[tuple[str, str], tuple[str, str]]]:
    """Two namespaces on one 10.77.x.0/24 link; removed afterwards (their veth goes with them)."""
    tag = secrets.token_hex(3)
    a, b = f"nslan{tag}a", f"nslan{tag}b"
    subnet = f"10.77.{int(tag[:2], 16)}"
    try:
        ip("netns", "add", a)
        ip("netns", "add", b)
    except subprocess.CalledProcessError as exc:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.decode().strip()}")
    try:
        ip("link", "add", f"v{tag}a", "netns", a, "type", "veth", "peer", "name", f"v{tag}b", "netns", b)
        for ns, dev, addr in ((a, f"v{tag}a", f"{subnet}.1"), (b, f"v{tag}b", f"{subnet}.2")):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield (a, f"{subnet}.1"), (b, f"{subnet}.2")
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class NodeProcess:
    def __init__(self, namespace: str, host: str, service: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "tests.p2p.lan_process", host, service],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(json.loads(line))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, predicate, timeout: float = 90.0) -> dict:  # noqa: ANN001
        """The first line that satisfies ``predicate`` (the timeout only bounds a hang)."""
        with self.changed:
            ok = self.changed.wait_for(lambda: any(predicate(x) for x in self.lines) or self.proc.poll() is not None,
                                       timeout)
            match = next((x for x in self.lines if predicate(x)), None)
        if not ok or match is None:
            err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
            raise AssertionError(f"never happened: lines {self.lines}, stderr {err[-2000:]}")
        return match

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def test_two_nodes_on_one_lan_find_each_other_by_mdns_with_nothing_typed(lan_pair) -> None:  # noqa: ANN001
    (ns_a, host_a), (ns_b, host_b) = lan_pair
    service = f"_ns{secrets.token_hex(4)}._tcp.local."
    a, b = NodeProcess(ns_a, host_a, service), NodeProcess(ns_b, host_b, service)
    try:
        first_a = a.wait_for(lambda x: "lan" in x)
        first_b = b.wait_for(lambda x: "lan" in x)
        assert first_a["lan"] == f"looking on {host_a}" and first_b["lan"] == f"looking on {host_b}"
        id_a, id_b = first_a["node_id"], first_b["node_id"]
        # each lists the other at its LAN address, learned from its signed record over pinned TLS
        a.wait_for(lambda x: f"{id_b}@{host_b}:" in " ".join(x["peers"]))
        b.wait_for(lambda x: f"{id_a}@{host_a}:" in " ".join(x["peers"]))
    finally:
        a.stop()
        b.stop()
