"""Smoke tests of a frozen bundle: ``--self-test``, a short solo headless run, the window.

Each runs the frozen executable the way a volunteer's machine would (no Python, no repo on the
path, a fresh data dir outside the bundle) and fails with the tail of its output. The bundle's
file list is compared before and after: the app must write nothing into its install folder, or
an upgrade would lose (or clobber) a wallet, ledger or checkpoint kept there.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SELF_TEST_TIMEOUT_S = 300  # the frozen self-test ran in 2.4 s (PLATFORM.md); unpacking a onefile adds more
HEADLESS_TIMEOUT_S = 600  # hardware benchmark, solo genesis start and two training steps on 2 slow cores
HEADLESS_STEPS = 2
# The window is judged by staying up: a missing Qt module or plugin ends it within seconds of
# launch, and the window shows before torch is imported (PLATFORM.md), so 20 s is plenty.
GUI_SECONDS = 20
SUMMARY_FILE = "run_summary.json"  # app/node/runtime/node_runtime.py writes it into the data dir
_TAIL_CHARS = 4000


class SmokeTestFailed(Exception):
    """The frozen app did not pass a smoke test; the message holds its output's tail."""


@dataclass
class SmokeReport:
    self_test: dict[str, Any] = field(default_factory=dict)
    self_test_seconds: float = 0.0
    headless_seconds: float = 0.0
    gui_seconds: float = 0.0
    headless_tail: str = ""


def _env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"QT_QPA_PLATFORM": "offscreen", "NEUROSHARD_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    # A frozen app must not lean on the build venv's modules.
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(key, None)
    return env


def _run(command: list[str], env: dict[str, str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=tempfile.gettempdir(), check=False)
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or "") + (exc.stderr or "")
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        raise SmokeTestFailed(f"{what} did not finish in {timeout:.0f} s:\n{output[-_TAIL_CHARS:]}") from exc


def parse_self_test(stdout: str) -> dict[str, Any]:
    """The last line of stdout that parses as a JSON object (Qt or torch may log lines before it)."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(found, dict):
                return found
    raise SmokeTestFailed(f"--self-test printed no JSON object:\n{stdout[-_TAIL_CHARS:]}")


def check_self_test(executable: Path, data_dir: Path) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    done = _run([str(executable), "--self-test"], _env(data_dir), SELF_TEST_TIMEOUT_S, "--self-test")
    seconds = time.perf_counter() - started
    result = parse_self_test(done.stdout) if done.stdout.strip() else {}
    failed = [f"{name}: {value}" for name, value in result.get("checks", {}).items() if value != "ok"]
    failed += [f"{name}: {value}" for name, value in result.get("versions", {}).items()
               if str(value).startswith("MISSING")]
    if done.returncode != 0 or not result.get("ok") or failed:
        raise SmokeTestFailed(f"--self-test failed (exit {done.returncode}): {'; '.join(failed) or 'see output'}\n"
                              f"{(done.stdout + done.stderr)[-_TAIL_CHARS:]}")
    if result.get("frozen") is not True:
        raise SmokeTestFailed(f"{executable} reported frozen={result.get('frozen')}: it is not the PyInstaller bundle")
    return result, seconds


def check_headless(executable: Path, data_dir: Path, steps: int = HEADLESS_STEPS) -> tuple[str, float]:
    command = [str(executable), "--headless", "--max-steps", str(steps), "--data-dir", str(data_dir), "--port", "0"]
    started = time.perf_counter()
    done = _run(command, _env(data_dir), HEADLESS_TIMEOUT_S, "--headless --max-steps")
    seconds = time.perf_counter() - started
    tail = (done.stdout + done.stderr)[-_TAIL_CHARS:]
    if done.returncode != 0:
        raise SmokeTestFailed(f"headless run of {steps} steps failed (exit {done.returncode}):\n{tail}")
    trained = _summary_steps(data_dir / SUMMARY_FILE)
    if trained < steps:
        raise SmokeTestFailed(f"headless run exited 0 but {SUMMARY_FILE} records {trained} training steps, "
                              f"expected {steps}:\n{tail}")
    return tail, seconds


def _summary_steps(path: Path) -> int:
    """Steps the node says it trained, from the summary the runtime writes (devnet reads it too)."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SmokeTestFailed(f"the headless run left no readable {path}: {exc}") from exc
    steps = summary.get("steps") if isinstance(summary, dict) else None
    if not isinstance(steps, int):
        raise SmokeTestFailed(f"{path} has no integer 'steps': {str(summary)[:300]}")
    return steps


def check_gui(executable: Path, data_dir: Path, seconds: float | None = None) -> float:
    """Start the window offscreen; it must still be running after ``seconds``, then it is stopped."""
    seconds = GUI_SECONDS if seconds is None else seconds
    command = [str(executable), "--data-dir", str(data_dir), "--port", "0"]
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, env=_env(data_dir), stdout=log, stderr=subprocess.STDOUT,
                                   cwd=tempfile.gettempdir())
        try:
            code = process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            return seconds
        log.seek(0)
        raise SmokeTestFailed(f"the window quit by itself after less than {seconds:.0f} s (exit {code}):\n"
                              f"{log.read()[-_TAIL_CHARS:]}")


def check_subcommands(executable: Path, data_dir: Path, names: Iterable[str]) -> None:
    """``<exe> NAME --help`` for each sub-command: cli.py imports their modules by name at run
    time, which PyInstaller's analysis cannot see, so this proves the hidden imports landed."""
    for name in names:
        done = _run([str(executable), name, "--help"], _env(data_dir), SELF_TEST_TIMEOUT_S, f"{name} --help")
        if done.returncode != 0 or f"usage: neuroshard {name}" not in done.stdout:
            raise SmokeTestFailed(f"sub-command {name!r} does not start frozen (exit {done.returncode}):\n"
                                  f"{(done.stdout + done.stderr)[-_TAIL_CHARS:]}")


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def run_smoke_tests(executable: Path, bundle_dir: Path, subcommands: Iterable[str] = ()) -> SmokeReport:
    """Every smoke test against ``executable``; raises SmokeTestFailed on the first failure."""
    if not executable.is_file():
        raise SmokeTestFailed(f"{executable} does not exist: the build produced no executable there")
    before = _snapshot(bundle_dir)
    report = SmokeReport()
    with tempfile.TemporaryDirectory(prefix="neuroshard-smoke-") as tmp:
        report.self_test, report.self_test_seconds = check_self_test(executable, Path(tmp) / "selftest-data")
        report.headless_tail, report.headless_seconds = check_headless(executable, Path(tmp) / "node-data")
        report.gui_seconds = check_gui(executable, Path(tmp) / "gui-data")
        check_subcommands(executable, Path(tmp) / "cli-data", subcommands)
    changed = sorted(set(_snapshot(bundle_dir).items()) ^ set(before.items()))
    if changed:
        names = sorted({name for name, _ in changed})[:10]
        raise SmokeTestFailed(f"the app wrote into its install folder {bundle_dir}: {names}")
    return report
