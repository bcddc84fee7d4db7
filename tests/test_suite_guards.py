"""The suite's own guard (tests/conftest.py): crashes no test asserts on still fail the run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

CASES = {
    "clean": ("def test_fine():\n    assert True\n", 0),
    "thread_crash": ("import threading\n\ndef test_thread():\n"
                     "    t = threading.Thread(target=lambda: 1 / 0, name='doomed')\n    t.start()\n    t.join()\n", 1),
    "unraisable": ("class Bad:\n    def __del__(self):\n        raise RuntimeError('boom in __del__')\n\n"
                   "def test_unraisable():\n    Bad()\n", 1),
    "lingering_thread": ("import threading\n\nSTOP = threading.Event()\n\ndef test_leaks_a_thread():\n"
                         "    threading.Thread(target=STOP.wait, args=(20,), name='left-running').start()\n\n"
                         "def teardown_module():\n    pass\n", 1),
    "fixture_teardown_error": ("import pytest\n\n@pytest.fixture\ndef resource():\n    yield 1\n"
                               "    raise RuntimeError('boom while tearing down')\n\n"
                               "def test_uses_it(resource):\n    assert resource == 1\n", 1),
    "module_teardown_error": ("def test_fine():\n    assert True\n\n"
                              "def teardown_module():\n    raise RuntimeError('boom in teardown_module')\n", 1),
    # after a Qt suite the process leaves through os._exit (conftest.pytest_unconfigure): the
    # status must survive that exit, for a crash as for a clean run
    "qt_clean": ("import PySide6.QtCore\n\ndef test_fine():\n    assert True\n", 0),
    "qt_thread_crash": ("import threading\nimport PySide6.QtCore\n\ndef test_thread():\n"
                        "    t = threading.Thread(target=lambda: 1 / 0, name='doomed')\n    t.start()\n    t.join()\n", 1),
    "qt_fixture_teardown_error": ("import PySide6.QtCore\nimport pytest\n\n@pytest.fixture\ndef resource():\n"
                                  "    yield 1\n    raise RuntimeError('boom while tearing down')\n\n"
                                  "def test_uses_it(resource):\n    assert resource == 1\n", 1),
}
CRASH_CASES = {"thread_crash", "unraisable", "lingering_thread", "qt_thread_crash"}


@pytest.mark.parametrize("case", list(CASES))
def test_crashes_outside_assertions_fail_the_run(tmp_path: Path, case: str) -> None:
    body, expected = CASES[case]
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / f"test_{case}.py").write_text(body)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == expected, done.stdout[-3000:]
    if case in CRASH_CASES:
        assert "crashes outside the tests' assertions" in done.stdout
    elif expected:
        assert "1 passed, 1 error" in done.stdout  # pytest's own verdict on a teardown error


def test_idle_thread_pool_workers_are_not_counted_as_lingering(tmp_path: Path) -> None:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_pool.py").write_text(
        "from concurrent.futures import ThreadPoolExecutor\n\nPOOL = ThreadPoolExecutor(2)\n\n"
        "def test_uses_a_pool():\n    assert POOL.submit(lambda: 2).result() == 2\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]


def _run_copy(tmp_path: Path, name: str, body: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / name).write_text(body)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_random_draws_repeat_from_run_to_run_and_differ_between_tests(tmp_path: Path) -> None:
    body = ("import random\n\n"
            "def test_a():\n    print('draw a', random.random())\n\n"
            "def test_b():\n    print('draw b', random.random())\n")
    runs = [_run_copy(tmp_path, "test_draws.py", body) for _ in range(2)]
    draws = [dict(re.findall(r"draw (\w) ([0-9.e-]+)", run.stdout)) for run in runs]
    assert all(run.returncode == 0 for run in runs), runs[0].stdout[-3000:]
    assert len(draws[0]) == 2 and draws[0] == draws[1]  # the same on every run
    assert draws[0]["a"] != draws[0]["b"]  # each test its own stream


def test_hypothesis_examples_have_no_wall_clock_deadline_and_repeat(tmp_path: Path) -> None:
    """Hypothesis' default 200 ms per example (and its 'too slow' check) fail a loaded machine."""
    body = ("import time\nfrom hypothesis import given, settings, strategies as st\n\n"
            "@settings(max_examples=3)\n@given(st.integers())\n"
            "def test_slow_examples(n):\n    print('example', n)\n    time.sleep(0.25)\n")
    runs = [_run_copy(tmp_path, "test_slow_property.py", body) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stdout[-3000:]
    examples = [re.findall(r"example (-?\d+)", run.stdout) for run in runs]
    assert examples[0] and examples[0] == examples[1]  # derandomized: the same examples every run
