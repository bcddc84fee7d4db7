"""``python main.py devnet --nodes N --steps S``: a tracker and N node processes on loopback.

Each node gets its own data dir with a ``config.toml`` holding the devnet's short timescales
(tiny model, DiLoCo every few steps, heartbeats in seconds); the code path is the production one.
The devnet reads the nodes' JSON event lines, draws a progress bar on a terminal (stderr),
enforces an overall timeout, always kills its children, and prints one JSON summary line built
from each node's ``run_summary.json``. ``run_devnet`` is the same as a Python API (tests and
benchmarks/training.py call it).

The summary accounts for every planned step: each driver's ``steps`` are either committed (its
own count, or the last step it reported before it died, plus what a surviving driver took over,
listed under ``taken_over``) or listed under ``lost_steps`` with the reason, and ``dead_nodes``
names every node that was killed or exited with an error. A ``--kill``
of a role the run does not have is refused (exit 2) instead of silently killing nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from app.node.flags import count_argument, port_argument, seconds_argument

MAIN = Path(__file__).resolve().parents[2] / "main.py"
TINY_LAYERS = 4  # ModelArchitecture.tiny().layers; kept here so importing the devnet stays light


class DevnetError(RuntimeError):
    """The devnet could not start or did not finish; the message says what to look at."""


class DevnetUsageError(DevnetError):
    """The request cannot be met (a bad flag, a --kill of a role this run does not have): exit 2."""


def devnet_training(nodes: int, steps: int, inner_steps: int | None = None) -> dict[str, Any]:
    """The ``[training]`` section every devnet node gets: seconds instead of hours (DESIGN.md §4)."""
    return {
        "model": "tiny", "batch_size": 8, "micro_batches": 4, "seq_len": 64, "lr": 3e-3,
        "warmup_steps": 5, "decay_steps": max(100, steps), "grad_clip": 1.0,
        "inner_steps": inner_steps or max(1, min(20, steps // 2)), "sync_timeout_s": 10.0,
        "checkpoint_every": 5, "quorum_session_s": 60.0, "expected_nodes": nodes, "join_wait_s": 3.0,
        "linger_s": 3.0, "heal_interval_s": 2.0, "max_layers_per_node": 0 if nodes == 1 else math.ceil(TINY_LAYERS / 2),
    }


DEVNET_P2P = {"heartbeat_interval_s": 1.0, "heartbeat_timeout_s": 6.0, "rpc_timeout_s": 5.0}
"""Holders that stop heart-beating drop out of the registry within 6 s instead of 120 s."""


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[str]
    data_dir: Path | None = None
    step: int = 0
    roles: tuple[str, ...] = ()
    layers: tuple[int, int] = (0, 0)
    finished: bool = False
    served: int = 0  # steps applied on a non-driver stage (it is in some driver's pipeline)
    node_id: str = ""  # a driver's id, from its quorum event (a killed one writes no summary)
    tokens: int = 0  # a driver's tokens so far, from its step events
    argv: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pump(proc: _Proc, lines: queue.Queue[tuple[str, str]], copy: Path) -> None:
    assert proc.popen.stdout is not None
    with copy.open("w") as out:
        for line in proc.popen.stdout:
            out.write(line)
            out.flush()
            lines.put((proc.name, line))


def _spawn(name: str, argv: list[str], log_path: Path, lines: queue.Queue[tuple[str, str]]) -> _Proc:
    """Start ``main.py argv``: stdout (JSON events) is read and copied to <name>.events, stderr
    goes to <name>.log."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "QT_QPA_PLATFORM": "offscreen"}
    with log_path.open("w") as stderr:
        popen = subprocess.Popen([sys.executable, str(MAIN), *argv], stdout=subprocess.PIPE, stderr=stderr,
                                 text=True, env=env, start_new_session=True)
    proc = _Proc(name, popen, argv=list(argv))
    threading.Thread(target=_pump, args=(proc, lines, log_path.with_suffix(".events")), daemon=True).start()
    return proc


def _write_node_config(data_dir: Path, training: dict[str, Any], tracker: str, modes: list[str],
                       economics: dict[str, Any] | None = None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    config = {"node": {"host": "127.0.0.1", "port": 0, "trackers": [tracker], "modes": modes},
              "training": training, "p2p": DEVNET_P2P, "economics": economics or {"preset": "devnet"}}
    (data_dir / "config.toml").write_bytes(tomli_w.dumps(config).encode())


def _seed_hardware_cache(dirs: list[Path]) -> None:
    """Measure once and give every node the result: N simultaneous benchmarks on a small machine
    would each measure the others' load."""
    from app.node import hardware

    report = hardware.measure("cpu")
    for d in dirs:
        hardware.save_cache(d, report)


@dataclass
class Devnet:
    nodes: int
    steps: int
    workdir: Path
    base_port: int = 0
    inner_steps: int | None = None
    timeout_s: float = 600.0
    progress: bool = False
    json_events: bool = False
    kill: tuple[str, int] | None = None  # (role, driver step): SIGKILL the first node with that role
    async_nodes: int = 0  # the last N nodes run async mode (T5-style) instead of the pipeline
    restart: bool = False  # start the killed node again on its data dir (it resumes and rejoins)
    restarted: list[str] = field(default_factory=list)
    _tracker: str = ""
    _training: dict[str, Any] = field(default_factory=dict)
    _economics: dict[str, Any] = field(default_factory=dict)
    _client_key: Any = None
    training_overrides: dict[str, Any] = field(default_factory=dict)
    verify_nodes: int = 0  # the last N pipeline nodes also run mode "verify", staked at genesis
    lazy_nodes: int = 0  # the first N nodes are lazy: they claim a made-up step per real one
    poison_nodes: int = 0  # the first N nodes send poisoned pseudo-gradients (devnet_poison.py)
    fetch_nodes: int = 0  # the last N nodes start with the manifest only and fetch shards (devnet_data.py)
    grief_nodes: int = 0  # the first N verify-mode nodes fail every proof they judge (forged evidence)
    economics_overrides: dict[str, Any] = field(default_factory=dict)
    generate: str | None = None  # at the end, generate from this prompt through the network (#17)
    generate_tokens: int = 16
    generation: dict[str, Any] | None = None
    upgrade_at: int | None = None  # force the architecture recalculation at this driver step (devnet_upgrade.py)
    procs: list[_Proc] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    lines: queue.Queue[tuple[str, str]] = field(default_factory=queue.Queue)

    def run(self) -> dict[str, Any]:
        began = time.time()
        try:
            tracker = self._tracker = self._start_tracker()
            self._start_nodes(tracker)
            self._watch(began)
        finally:
            self._stop_all()
        return self._summary(time.time() - began)

    def _start_tracker(self) -> str:
        port = self.base_port or _free_port()
        log = self.workdir / "tracker.log"
        proc = _spawn("tracker", ["tracker", "--host", "127.0.0.1", "--port", str(port),
                                  "--heartbeat-timeout", str(DEVNET_P2P["heartbeat_timeout_s"])], log, self.lines)
        self.procs.append(proc)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                name, line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if proc.popen.poll() is not None:
                    raise DevnetError(f"the tracker exited at start; see {log}") from None
                continue
            if "listening" in line:
                return f"127.0.0.1:{port}"
        raise DevnetError(f"the tracker did not start within 30 s; see {log}")

    def _start_nodes(self, tracker: str) -> None:
        pipeline_nodes = self.nodes - self.async_nodes
        training = {**devnet_training(pipeline_nodes, self.steps, self.inner_steps), **self.training_overrides}
        if self.upgrade_at is not None:
            from app.node.devnet_upgrade import upgrade_training

            training.update(upgrade_training(self.upgrade_at))
        if self.generate is not None:  # the nodes stay up after training until the generation is done
            training["linger_s"] = max(float(training.get("linger_s", 0.0)), self.timeout_s)
        self._training = training
        dirs = [self.workdir / f"node{i}" for i in range(self.nodes)]
        verifiers = list(range(pipeline_nodes - self.verify_nodes, pipeline_nodes)) if self.verify_nodes else []
        from app.node.runtime.devnet_funding import create_node_wallets

        create_node_wallets(dirs)  # the same node ids in every run: a devnet is repeatable
        economics: dict[str, Any] = {"preset": "devnet", **self.economics_overrides}
        if verifiers:  # runtime/devnet_funding.py: wallets, genesis grant and stake for the verifiers
            from app.node.runtime.devnet_funding import devnet_genesis_settings, fund_verifiers

            economics = {**devnet_genesis_settings(), **self.economics_overrides}
            fund_verifiers([dirs[i] for i in verifiers], dirs, economics, int(time.time() * 1000))
        elif self.generate is not None:  # a funded client pays for the tokens it generates at the end
            from app.node.runtime.devnet_funding import devnet_genesis_settings
            from app.node.runtime.inference_check import fund_inference_client

            economics = {**devnet_genesis_settings(), **self.economics_overrides}
            self._client_key = fund_inference_client(dirs, economics, int(time.time() * 1000))
        self._economics = economics
        for i, d in enumerate(dirs):
            # Modes are explicit: a loaded laptop may measure T5, which would otherwise send every
            # devnet node to async mode and leave no pipeline to train.
            modes = ["async", "data"] if i >= self.nodes - self.async_nodes else ["pipeline", "data"]
            modes += ["verify"] if i in verifiers else []
            modes += ["inference"] if self.generate is not None and "pipeline" in modes else []
            lazy = {"fault_lazy_steps": 1} if i < self.lazy_nodes else {}
            lazy.update({"fault_grief": True} if i in verifiers[:self.grief_nodes] else {})
            _write_node_config(d, self._own_training(i, d, training), tracker, modes, {**economics, **lazy})
            if self.upgrade_at is not None:
                from app.node.devnet_upgrade import enable_automatic_migration

                enable_automatic_migration(d)
        _seed_hardware_cache(dirs)
        for i, d in enumerate(dirs):
            argv = ["--headless", "--json-events", "--data-dir", str(d), "--max-steps", str(self.steps)]
            proc = _spawn(f"node{i}", argv, self.workdir / f"node{i}.log", self.lines)
            proc.data_dir = d
            self.procs.append(proc)

    def _own_training(self, i: int, data_dir: Path, training: dict[str, Any]) -> dict[str, Any]:
        """Node i's ``[training]``: the devnet's, with the faults or roles asked for it."""
        if i < self.poison_nodes:
            from app.node.devnet_poison import poisoned_training

            training = poisoned_training(training)
        if i >= self.nodes - self.fetch_nodes:
            from app.node.devnet_data import fetching_training

            training = fetching_training(training, data_dir)
        return training

    def _nodes(self) -> list[_Proc]:
        return [p for p in self.procs if p.name != "tracker"]

    def _watch(self, began: float) -> None:
        while True:
            nodes = self._nodes()
            if all(p.popen.poll() is not None for p in nodes):
                return
            if self.generate is not None and all(p.finished or p.popen.poll() is not None for p in nodes):
                self._generate()
                return
            self._refuse_impossible_kill()
            if time.time() - began > self.timeout_s:
                raise DevnetError(f"devnet did not finish within {self.timeout_s:.0f} s; logs in {self.workdir}")
            try:
                name, line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self._on_line(name, line)

    def _on_line(self, name: str, line: str) -> None:
        if self.json_events:
            sys.stdout.write(json.dumps({"node": name, "line": line.strip()}) + "\n")
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return
        proc = next(p for p in self.procs if p.name == name)
        kind = event.get("event")
        if kind == "layers":
            proc.roles = tuple(event.get("roles", ()))
            proc.layers = (int(event.get("first_layer", 0)), int(event.get("last_layer", 0)))
        elif kind == "quorum" and event.get("members"):
            proc.node_id = str(event["members"][0])
        elif kind == "step" and "driver" in proc.roles:
            proc.step = max(proc.step, int(event.get("step", 0)))
            proc.tokens = max(proc.tokens, int(event.get("tokens_total", 0)))
            self._maybe_kill()
            self._draw()
        elif kind == "step":
            proc.served += 1
        elif kind == "error":
            proc.errors.append(str(event.get("message", ""))[:300])
        elif kind == "activity" and str(event.get("activity", "")).startswith("finished"):
            proc.finished = True

    def _generate(self) -> None:
        """Every node trained its steps and lingers: generate through them, compare in process."""
        import asyncio

        from app.node.p2p.config import P2PConfig
        from app.node.runtime.inference_check import generate_and_compare
        from app.node.runtime.inference_client import GenerationFailed
        from app.node.training.config import TrainingConfig

        arch = TrainingConfig.from_dict(self._training).architecture()
        config = P2PConfig(use_upnp=False, **DEVNET_P2P)
        from app.node.economics.constants import from_settings

        try:
            self.generation = asyncio.run(generate_and_compare(
                [self._tracker], arch, str(self.generate), self.generate_tokens, config=config,
                key=self._client_key, economics=from_settings(self._economics)))
        except GenerationFailed as exc:
            self.generation = {"prompt": self.generate, "error": str(exc)}

    def _refuse_impossible_kill(self) -> None:
        """Once every node said which roles it has, a --kill of a role nobody has is refused."""
        if self.kill is None or self.killed:
            return
        nodes = self._nodes()
        if not nodes or any(not p.roles for p in nodes):
            return  # still joining
        role = self.kill[0]
        if not any(role in p.roles for p in nodes):
            have = sorted({r for p in nodes for r in p.roles})
            raise DevnetUsageError(f"--kill {role}:{self.kill[1]}: this {len(nodes)}-node run has no {role} "
                                   f"(its roles: {', '.join(have)}); nothing was killed")

    def _maybe_kill(self) -> None:
        if self.kill is None:
            return
        role, at_step = self.kill
        # A holder whose stage has another live holder (so the run can fail over to it), and of
        # those one that is serving (in a pipeline) rather than an idle replica: its loss is felt.
        live = [p for p in self._nodes() if p.popen.poll() is None]

        def replicated(p: _Proc) -> bool:
            return any(q is not p and q.layers == p.layers for q in live)

        # a driver that has not reported a step yet may not have published its progress either
        candidates = sorted((p for p in live if role in p.roles),
                            key=lambda p: (not replicated(p), role == "driver" and p.step == 0, -p.served))
        victim = candidates[0] if candidates else None
        if victim is not None and max(p.step for p in self._nodes()) >= at_step and victim.popen.poll() is None:
            os.killpg(victim.popen.pid, signal.SIGKILL)
            self.killed.append(victim.name)
            self.kill = None
            if self.restart:
                victim.popen.wait(timeout=10)
                again = _spawn(f"{victim.name}-restarted", victim.argv,
                               self.workdir / f"{victim.name}-restarted.log", self.lines)
                again.data_dir = victim.data_dir
                self.procs.append(again)
                self.restarted.append(again.name)

    def _draw(self) -> None:
        if not self.progress:
            return
        drivers = [p for p in self._nodes() if "driver" in p.roles]
        done = sum(min(p.step, self.steps) for p in drivers)
        total = max(1, self.steps * len(drivers))
        filled = int(30 * done / total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} driver steps")
        sys.stderr.flush()

    def _stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.popen.pid, signal.SIGTERM)
                    proc.popen.wait(timeout=10)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    with_kill(proc)
        if self.progress:
            sys.stderr.write("\n")

    def _summary(self, elapsed: float) -> dict[str, Any]:
        dirs = list(dict.fromkeys(p.data_dir for p in self._nodes() if p.data_dir is not None))
        seen = {p.name: {"roles": list(p.roles), "layers": list(p.layers), "last_step": p.step,
                         "data_dir": p.data_dir.name if p.data_dir else p.name, "node_id": p.node_id,
                         "tokens": p.tokens} for p in self._nodes()}
        out = summarize(dirs, self.steps,
                        elapsed, killed=self.killed,
                        exit_codes={p.name: p.popen.returncode for p in self._nodes()},
                        errors={p.name: p.errors for p in self._nodes() if p.errors}, seen=seen)
        if self.upgrade_at is not None:
            from app.node.devnet_upgrade import upgrade_report

            out["upgrade"] = upgrade_report(dirs)
        return out


def with_kill(proc: _Proc) -> None:
    try:
        os.killpg(proc.popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    proc.popen.wait(timeout=5)


def summarize(dirs: list[Path], steps: int, elapsed: float, *, killed: list[str],
              exit_codes: dict[str, int | None], errors: dict[str, list[str]],
              seen: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """One summary from the nodes' run_summary.json files (a killed node may have none) and what
    the devnet saw of each process (``seen``: roles, layers and last step from its events)."""
    nodes: dict[str, dict[str, Any]] = {}
    for d in dirs:
        path = d / "run_summary.json"
        if path.exists():
            nodes[d.name] = json.loads(path.read_text())
    drivers = [n for n in nodes.values() if "driver" in n.get("roles", [])]
    bytes_sent: dict[str, int] = {"activations": 0, "pseudo_gradients": 0, "other": 0}
    for n in nodes.values():
        for kind, count in n.get("bytes_sent", {}).items():
            bytes_sent[kind if kind in bytes_sent else "other"] += int(count)
    holders: dict[str, set[str]] = {}
    for n in nodes.values():
        for layer, digest in n.get("layer_hashes", {}).items():
            holders.setdefault(layer, set()).add(digest)
    agree = {layer: len(digests) == 1 for layer, digests in sorted(holders.items())}
    return {
        "nodes": len(dirs), "steps": steps, "elapsed_s": round(elapsed, 1),
        "quorums": [n["quorum"] for n in drivers if n.get("quorum")],
        "layer_assignment": {name: {"layers": n.get("layer_range"), "roles": n.get("roles"),
                                    "inner_steps": n.get("inner_steps")} for name, n in sorted(nodes.items())},
        "driver_steps": {name: n.get("steps") for name, n in sorted(nodes.items()) if n in drivers},
        "loss_start": _mean([n.get("loss_first") for n in drivers]),
        "loss_end": _mean([n.get("loss_last") for n in drivers]),
        "tokens": sum(int(n.get("tokens", 0)) for n in drivers) + _tokens_of_dead_drivers(nodes, seen or {}),
        "bytes_sent": bytes_sent,
        "failovers": sum(int(n.get("failovers", 0)) for n in drivers),
        "router_failovers": sum(int(n.get("router_failovers", 0)) for n in nodes.values()),
        "replays": sum(int(n.get("replays", 0)) for n in drivers),
        "weights_agree": agree, "all_weights_agree": all(agree.values()) if agree else False,
        "killed": killed, "exit_codes": exit_codes, "errors": errors,
        "proofs": _proof_report(dirs),
        **account_steps(nodes, steps, killed=killed, exit_codes=exit_codes, seen=seen or {}),
    }


def _proof_report(dirs: list[Path]) -> dict[str, Any]:
    """Per proof kind over every node's ledger: made, accepted, refused (reasons), checked,
    challenged, slashed (economics/report.py)."""
    import tomllib

    from app.node.economics.constants import from_settings
    from app.node.economics.report import report_from_dirs

    try:  # the nodes' own [economics] (genesis key, windows): the same rules their ledgers ran
        settings = tomllib.loads((dirs[0] / "config.toml").read_text()).get("economics", {}) if dirs else {}
        settings = {k: v for k, v in settings.items() if k != "fault_lazy_steps"}
        return report_from_dirs(dirs, from_settings(settings, devnet=True))
    except Exception as exc:  # a summary must not fail on one unreadable ledger
        return {"error": str(exc)}


def account_steps(nodes: dict[str, dict[str, Any]], steps: int, *, killed: list[str],
                  exit_codes: dict[str, int | None], seen: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every planned step, committed or lost with a reason, and every node that died.

    The plan is ``steps`` per driver: every node that reported the driver role (in its events or
    its run_summary.json). A driver's committed steps are its own count when it wrote one, else
    the last step it reported before it died, joined with the steps of its plan that a live driver
    took over (a survivor's ``taken_over``); steps both did (the dead one committed them after its
    last DiLoCo round, so their updates died with it) are counted once and listed as retrained."""
    by_dir: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, info in seen.items():
        by_dir.setdefault(str(info.get("data_dir", name)), []).append((name, info))
    driver_dirs = sorted({d for d, procs in by_dir.items() if any("driver" in i.get("roles", []) for _, i in procs)}
                         | {d for d, n in nodes.items() if "driver" in n.get("roles", [])})
    takeovers = _takeovers(nodes)
    committed: dict[str, int] = {}
    lost: list[dict[str, Any]] = []
    taken: list[dict[str, Any]] = []
    retrained: list[dict[str, Any]] = []
    for d in driver_dirs:
        own = nodes.get(d, {})
        last_seen = max((int(i.get("last_step", 0)) for _, i in by_dir.get(d, [])), default=0)
        done = max(int(own.get("steps", 0) or 0), last_seen) if "driver" in own.get("roles", ["driver"]) \
            else last_seen
        done = min(done, steps)
        ids = {str(i.get("node_id")) for _, i in by_dir.get(d, []) if i.get("node_id")} | {str(own.get("node_id", ""))}
        covered = set(range(done))
        for item in (t for i in sorted(ids - {""}) for t in takeovers.get(i, [])):
            span = set(range(item["from_step"], min(steps, item["from_step"] + item["steps"])))
            if span & covered:
                retrained.append({"driver": d, "steps": len(span & covered), "by": item["by"],
                                  "reason": f"{d} committed them after its last DiLoCo round, so their updates "
                                            f"died with it; {item['by']} trained them again"})
            covered |= span
            taken.append({"driver": d, "by": item["by"], "from_step": item["from_step"], "steps": item["steps"]})
        committed[d] = len(covered)
        missing = steps - committed[d]
        if missing > 0:
            reason = _why_lost(d, by_dir.get(d, []), done, steps, killed, exit_codes)
            if d in {t["driver"] for t in taken}:
                reason += f"; the driver that took over its stream trained only {len(covered) - done} of them"
            elif any(name in killed or exit_codes.get(name) not in (0,) for name, _ in by_dir.get(d, [])):
                reason += "; no live driver took over its remaining steps"
            lost.append({"driver": d, "steps": missing, "reason": reason})
    dead = [{"node": name, "roles": info.get("roles", []), "layers": info.get("layers", []),
             "last_step": info.get("last_step", 0),
             "cause": "killed by --kill (SIGKILL)" if name in killed else _exit_words(exit_codes.get(name))}
            for name, info in sorted(seen.items())
            if name in killed or exit_codes.get(name) not in (0,)]
    planned = steps * len(driver_dirs)
    lost_total = sum(item["steps"] for item in lost)
    return {"steps_accounted": {"planned": planned, "committed": sum(committed.values()), "lost": lost_total},
            "committed_steps": committed, "lost_steps": lost, "taken_over": taken, "retrained_steps": retrained,
            "dead_nodes": dead}


def _takeovers(nodes: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Dead drivers' streams that survivors trained, by the dead driver's node id (checked shapes:
    the summaries are the nodes' own files)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, n in sorted(nodes.items()):
        for item in n.get("taken_over", []) or []:
            try:
                entry = {"by": name, "from_step": max(0, int(item["from_step"])), "steps": max(0, int(item["steps"]))}
                out.setdefault(str(item["driver"]), []).append(entry)
            except (KeyError, TypeError, ValueError):
                continue
    return out


def _tokens_of_dead_drivers(nodes: dict[str, dict[str, Any]], seen: dict[str, dict[str, Any]]) -> int:
    """Tokens a driver that wrote no summary (killed) trained, from its last step event."""
    return sum(int(info.get("tokens", 0)) for info in seen.values()
               if "driver" in info.get("roles", []) and str(info.get("data_dir")) not in nodes)


def _why_lost(data_dir: str, procs: list[tuple[str, dict[str, Any]]], done: int, steps: int,
              killed: list[str], exit_codes: dict[str, int | None]) -> str:
    for name, _info in procs:
        if name in killed:
            return f"{name} was killed after committing step {done} of {steps}"
    for name, _info in procs:
        code = exit_codes.get(name)
        if code not in (0,):
            return f"{name} {_exit_words(code)} after committing step {done} of {steps}"
    return f"{data_dir} stopped after committing step {done} of {steps} without an error"


def _exit_words(code: int | None) -> str:
    if code is None:
        return "was still running when the devnet gave up"
    if code < 0:
        return f"died of signal {-code}"
    return f"exited with code {code}"


def _mean(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    return round(sum(numbers) / len(numbers), 4) if numbers else None


def run_devnet(nodes: int, steps: int, *, workdir: Path | None = None, keep: bool = False,
               base_port: int = 0, inner_steps: int | None = None, timeout_s: float = 600.0,
               progress: bool = False, json_events: bool = False, kill: tuple[str, int] | None = None,
               training_overrides: dict[str, Any] | None = None, async_nodes: int = 0,
               restart: bool = False, verify_nodes: int = 0, lazy_nodes: int = 0, poison_nodes: int = 0,
               fetch_nodes: int = 0, grief_nodes: int = 0, economics_overrides: dict[str, Any] | None = None,
               generate: str | None = None,
               generate_tokens: int = 16, upgrade_at: int | None = None) -> dict[str, Any]:
    """Run a devnet to the end and return its summary (see ``summarize``)."""
    if nodes < 1 or steps < 1:
        raise DevnetError("a devnet needs at least 1 node and 1 step")
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="neuroshard-devnet-"))
    root.mkdir(parents=True, exist_ok=True)
    diagnose = False  # a run that failed keeps its temporary workdir: its error names the logs there
    try:
        net = Devnet(nodes, steps, root, base_port=base_port, inner_steps=inner_steps, timeout_s=timeout_s,
                     progress=progress, json_events=json_events, kill=kill, async_nodes=async_nodes,
                     restart=restart, verify_nodes=verify_nodes, lazy_nodes=lazy_nodes, poison_nodes=poison_nodes,
                     fetch_nodes=fetch_nodes, grief_nodes=grief_nodes,
                     economics_overrides=dict(economics_overrides or {}),
                     training_overrides=dict(training_overrides or {}), generate=generate,
                     generate_tokens=generate_tokens, upgrade_at=upgrade_at)
        summary = net.run()
        if generate is not None:
            summary["generation"] = net.generation
        summary["restarted"] = net.restarted
        summary["workdir"] = str(root) if keep else None
        return summary
    except DevnetUsageError:
        raise
    except DevnetError:
        diagnose = True
        raise
    finally:
        if not keep and workdir is None and not diagnose:
            shutil.rmtree(root, ignore_errors=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=count_argument(1), default=3, help="node processes to start (default 3)")
    parser.add_argument("--steps", type=count_argument(1), default=30, help="training steps per driver (default 30)")
    parser.add_argument("--inner-steps", type=count_argument(1), help="DiLoCo H for the devnet (default steps/2, at most 20)")
    parser.add_argument("--json-events", action="store_true", help="also print every node event as JSON")
    parser.add_argument("--base-port", type=port_argument, default=0, help="tracker port (default: a free one)")
    parser.add_argument("--timeout", type=seconds_argument, default=600.0, help="give up after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the nodes' data dirs and logs")
    parser.add_argument("--corpus", type=Path, metavar="DIR",
                        help="train on your own text: a folder made by 'python -m app.node.data.build'")
    parser.add_argument("--block", choices=("transformer", "inl"), default="transformer",
                        help="block type of the model: transformer (default) or inl (seed 003's integrator blocks)")
    parser.add_argument("--verifiers", type=count_argument(0), default=0,
                        help="the last N pipeline nodes also run verify mode, staked at genesis")
    parser.add_argument("--lazy", type=count_argument(0), default=0,
                        help="the first N nodes are lazy (claim a made-up step per real one), for verify mode to catch")
    parser.add_argument("--poison", type=count_argument(0), default=0,
                        help="the first N nodes send poisoned pseudo-gradients, for held-out scoring to reject")
    parser.add_argument("--fetch-data", type=count_argument(0), default=0,
                        help="the last N nodes start with the genesis manifest only and fetch the shards from "
                        "data nodes, signing receipts the servers are paid from")
    parser.add_argument("--generate", metavar="PROMPT", help="after training, generate greedily from PROMPT through "
                        "the network and report tokens, tokens/s and whether they equal in-process generation")
    parser.add_argument("--generate-tokens", type=count_argument(1), default=16, help="tokens for --generate")
    parser.add_argument("--upgrade-at", type=count_argument(1), metavar="STEP",
                        help="force the architecture recalculation once a driver committed STEP: every node "
                             "migrates its layers to the grown model and training goes on (devnet_upgrade.py)")
    parser.add_argument("--kill", metavar="ROLE:STEP", help="SIGKILL the first node with ROLE (driver, "
                        "worker, validator), preferring one whose stage has a replica, once a driver reached STEP, "
                        "to watch failover")


def _parse_kill(text: str | None, steps: int | None = None) -> tuple[str, int] | None:
    if not text:
        return None
    role, _, step = text.partition(":")
    if role not in ("driver", "worker", "validator") or not step.isdigit():
        raise DevnetUsageError(f"--kill must be ROLE:STEP with ROLE driver, worker or validator, got {text!r}")
    if steps is not None and not 1 <= int(step) < steps:
        raise DevnetUsageError(f"--kill {text}: STEP must be between 1 and {steps - 1} (the run has {steps} steps), "
                               "or nothing would be killed")
    return role, int(step)


def _upgrade_step(step: int | None, steps: int) -> int | None:
    if step is not None and not 1 <= step < steps:
        raise DevnetUsageError(f"--upgrade-at {step}: STEP must be between 1 and {steps - 1} (the run has {steps} "
                               "steps), or no training would follow the upgrade")
    return step


def _corpus_overrides(corpus: Path | None) -> dict[str, Any]:
    if corpus is None:
        return {}
    if not (corpus / "manifest.json").is_file():
        raise DevnetError(f"{corpus} holds no manifest.json; build it with "
                          "'python -m app.node.data.build --input FILES --out DIR'")
    return {"corpus_dir": str(corpus.resolve())}


def run(args: argparse.Namespace) -> int:
    try:
        summary = run_devnet(args.nodes, args.steps, keep=args.keep, base_port=args.base_port,
                             inner_steps=args.inner_steps, timeout_s=args.timeout,
                             progress=sys.stderr.isatty(), json_events=args.json_events,
                             kill=_parse_kill(args.kill, args.steps),
                             verify_nodes=args.verifiers, lazy_nodes=args.lazy, poison_nodes=args.poison, fetch_nodes=args.fetch_data,
                             generate=args.generate, generate_tokens=args.generate_tokens,
                             upgrade_at=_upgrade_step(args.upgrade_at, args.steps),
                             training_overrides={**_corpus_overrides(args.corpus), "block_type": args.block})
    except DevnetUsageError as exc:
        print(f"devnet: error: {exc}", file=sys.stderr)
        return 2
    except DevnetError as exc:
        print(f"devnet: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, separators=(",", ":")))
    ok = all(code == 0 for name, code in summary["exit_codes"].items() if name not in summary["killed"])
    for item in summary["lost_steps"]:
        print(f"devnet: {item['steps']} planned steps lost: {item['reason']}", file=sys.stderr)
    generated = summary.get("generation")
    if args.generate is not None and (generated is None or not generated.get("equals_in_process")):
        print(f"devnet: generation through the network failed or differed: {generated}", file=sys.stderr)
        ok = False
    upgrade = summary.get("upgrade")
    if args.upgrade_at is not None and not (upgrade or {}).get("all_migrated"):
        print(f"devnet: not every node migrated to the new architecture: {upgrade}", file=sys.stderr)
        ok = False
    # a lost step is a failure, even when every survivor exited cleanly
    return 0 if ok and summary["loss_end"] is not None and not summary["lost_steps"] else 1
