"""Two homes behind two NAT routers, in network namespaces (needs root, ``ip`` and ``iptables``).

    home1 (192.168.1.2) -- r1 [MASQUERADE, 203.0.113.2] --+
                                                          +-- pub bridge (203.0.113.1: tracker, relay)
    home2 (192.168.2.2) -- r2 [MASQUERADE, 203.0.113.3] --+

Every link is a veth pair whose two ends lie in namespaces made here, so nothing can reach the
machine's own network; each router also counts (and drops) any packet headed outside the lab's
ranges, which :meth:`NatLab.leaked_packets` reads. The routers behave as RFC 5382 asks of a NAT
(REQ-4: an unsolicited inbound SYN is dropped, not answered with a reset) and as home routers
do (no inbound connection reaches the LAN unless it belongs to one opened from inside).
``rst_nat=True`` makes them answer such SYNs with a reset instead (Linux's default without that
rule), for the benchmark's comparison. Used by tests/p2p/test_nat_namespaces.py and
benchmarks/nat.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_IP = "203.0.113.1"
ROUTER_IPS = ("203.0.113.2", "203.0.113.3")
HOME_IPS = ("192.168.1.2", "192.168.2.2")
LAB_RANGES = ("203.0.113.0/24", "192.168.1.0/24", "192.168.2.0/24")
TRACKER_PORT = 7100
"""Fixed, so the homes start (and import torch) while the tracker does; the public namespace is
the lab's own, so nothing else listens there."""
TRACKER = f"{PUBLIC_IP}:{TRACKER_PORT}"


def why_not() -> str:
    """Why the lab cannot run here ('' when it can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces and NAT rules"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"needs {package} ({tool}); scripts/bootstrap.sh test installs it when run as root"
    return ""


def _run(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True, timeout=30).stdout


class LabUnavailable(RuntimeError):
    """The kernel or tools refused to build the lab (the message is theirs)."""


class NatLab:
    """The five namespaces and their links; ``close()`` deletes them (links go with them)."""

    def __init__(self, *, rst_nat: bool = False) -> None:
        tag = secrets.token_hex(3)
        self.tag = tag
        self.pub, self.routers, self.homes = f"nat{tag}p", (f"nat{tag}r1", f"nat{tag}r2"), (f"nat{tag}h1", f"nat{tag}h2")
        self.namespaces = (self.pub, *self.routers, *self.homes)
        try:
            self._build(rst_nat)
        except (subprocess.CalledProcessError, OSError) as exc:
            self.close()
            detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else str(exc)
            raise LabUnavailable(f"cannot build the NAT lab here: {str(detail).strip()}") from None

    def _ns(self, ns: str, *args: str) -> str:
        return _run("ip", "netns", "exec", ns, *args)

    def _build(self, rst_nat: bool) -> None:
        for ns in self.namespaces:
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", self.pub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.pub, "addr", "add", f"{PUBLIC_IP}/24", "dev", "br0")
        _run("ip", "-n", self.pub, "link", "set", "br0", "up")
        for i, (router, home) in enumerate(zip(self.routers, self.homes, strict=True), start=1):
            wan, port, lan, inside = f"w{self.tag}{i}", f"p{self.tag}{i}", f"l{self.tag}{i}", f"i{self.tag}{i}"
            _run("ip", "link", "add", wan, "netns", router, "type", "veth", "peer", "name", port, "netns", self.pub)
            _run("ip", "-n", self.pub, "link", "set", port, "master", "br0")
            _run("ip", "-n", self.pub, "link", "set", port, "up")
            _run("ip", "-n", router, "addr", "add", f"{ROUTER_IPS[i - 1]}/24", "dev", wan)
            _run("ip", "-n", router, "link", "set", wan, "up")
            _run("ip", "link", "add", lan, "netns", router, "type", "veth", "peer", "name", inside, "netns", home)
            _run("ip", "-n", router, "addr", "add", f"192.168.{i}.1/24", "dev", lan)
            _run("ip", "-n", router, "link", "set", lan, "up")
            _run("ip", "-n", home, "addr", "add", f"{HOME_IPS[i - 1]}/24", "dev", inside)
            _run("ip", "-n", home, "link", "set", inside, "up")
            _run("ip", "-n", home, "route", "add", "default", "via", f"192.168.{i}.1")
            self._ns(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            ipt = ("ip", "netns", "exec", router, "iptables")
            # anything headed outside the lab is counted and dropped (the test asserts zero)
            for chain in ("FORWARD", "OUTPUT"):
                _run(*ipt, "-N", f"LEAK{chain[0]}")
                for lab in LAB_RANGES:
                    _run(*ipt, "-A", f"LEAK{chain[0]}", "-d", lab, "-j", "RETURN")
                _run(*ipt, "-A", f"LEAK{chain[0]}", "-j", "DROP")
                _run(*ipt, "-A", chain, "-j", f"LEAK{chain[0]}")
            _run(*ipt, "-t", "nat", "-A", "POSTROUTING", "-o", wan, "-j", "MASQUERADE")
            # a home router: nothing new comes in from the internet, to the LAN or to the router
            _run(*ipt, "-A", "FORWARD", "-i", wan, "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP")
            if not rst_nat:  # RFC 5382 REQ-4: silently drop an unsolicited SYN
                _run(*ipt, "-A", "INPUT", "-i", wan, "-p", "tcp", "-m", "conntrack", "--ctstate", "NEW,INVALID",
                     "-j", "DROP")
            # direct router-to-router bytes: only a punched path carries them
            other = ROUTER_IPS[2 - i]
            _run(*ipt, "-A", "FORWARD", "-o", wan, "-d", other, "-j", "ACCEPT")

    def leaked_packets(self) -> int:
        """Packets the routers dropped because they were headed outside the lab's ranges."""
        total = 0
        for router in self.routers:
            for chain in ("LEAKF", "LEAKO"):
                for line in self._ns(router, "iptables", "-L", chain, "-v", "-n", "-x").splitlines():
                    fields = line.split()
                    if len(fields) > 2 and fields[2] == "DROP":
                        total += int(fields[0])
        return total

    def direct_bytes(self, router_index: int) -> int:
        """Bytes router ``router_index`` forwarded straight to the other home's router."""
        other = ROUTER_IPS[1 - router_index]
        out = self._ns(self.routers[router_index], "iptables", "-L", "FORWARD", "-v", "-n", "-x")
        for line in out.splitlines():
            fields = line.split()
            if len(fields) > 8 and fields[2] == "ACCEPT" and fields[8] == other:
                return int(fields[1])
        return 0

    def close(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def __enter__(self) -> NatLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LabProcess:
    """``python -m tests.p2p.nat_process ARGS`` inside a namespace; JSON lines out, stops when
    its stdin closes."""

    def __init__(self, namespace: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "tests.p2p.nat_process", *args],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.stderr = ""
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(json.loads(line))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr = (self.stderr + line)[-4000:]

    def wait_for(self, predicate: Any, timeout: float = 120.0) -> dict[str, Any]:
        """The first line that satisfies ``predicate`` (the timeout only bounds a hang)."""
        with self.changed:
            self.changed.wait_for(lambda: any(predicate(x) for x in self.lines) or self.proc.poll() is not None,
                                  timeout)
            match = next((x for x in self.lines if predicate(x)), None)
        if match is None:
            raise AssertionError(f"never happened: lines {self.lines[-20:]}, stderr {self.stderr[-2000:]}")
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
