"""Shared test settings: no display, no network beyond loopback, fast key derivation; and a run that
fails when something crashed behind the tests' backs.

Crashes that no test asserts on still fail the run (exit status 1, listed in the summary):

- an exception that ended a thread (an engine, a gRPC server, a worker) or one raised where
  Python can only print it (``__del__``, a callback): pytest records these as
  PytestUnhandledThreadExceptionWarning / PytestUnraisableExceptionWarning; here they count as
  failures, whichever test was running when they surfaced;
- a non-daemon thread still alive when the session ends (it would hang a normal exit); the idle
  workers of thread pools are not counted, an interpreter exit shuts their pools down and joins them.

Randomness is fixed: each test starts ``random`` and torch's generator from a seed derived from
its own node id (the same on every run and machine, different between tests), and hypothesis
draws its examples deterministically, with no per-example deadline and no "too slow" health
check (both measure wall-clock time, so a loaded machine failed tests that a quiet one passed).
Keys, nonces and salts still come from ``os.urandom``: a test whose outcome depends on their
value must fix the value itself (as tests/wallet does for the phrase checksum).

The process then leaves with ``os._exit`` carrying that status, because PySide's interpreter-exit
cleanup can deadlock after a GUI suite (see ``pytest_unconfigure``), but it leaves only after the
checks above have run, so skipping the interpreter's own teardown hides nothing that matters.
"""

import concurrent.futures.thread
import gc
import os
import random
import sys
import threading
import zlib

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

settings.register_profile("deterministic", derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("deterministic")


@pytest.fixture(autouse=True)
def _fixed_seed(request: pytest.FixtureRequest) -> None:
    seed = zlib.crc32(request.node.nodeid.encode())
    random.seed(seed)
    torch = sys.modules.get("torch")  # seeded when the test's modules use it; never imported here
    if torch is not None:
        torch.manual_seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed)

@pytest.fixture(autouse=True)
def _grpc_released_between_tests() -> object:
    """A test's event loop is gone when it ends; gRPC objects it left in reference cycles are
    freed now (app/node/p2p/aio.py ``release_grpc_after_loop``), not by the collector in the
    middle of a later test, whose gRPC calls and shutdown then waited on them: a test that hung
    or was cut off left a server behind, and the gRPC shutdown its collection set off hung a
    later test that used no network at all (loaded triple check, run 2 at e6532c2)."""
    yield
    from app.node.p2p.aio import release_grpc_after_loop

    release_grpc_after_loop()


_CRASH_WARNINGS = (pytest.PytestUnhandledThreadExceptionWarning, pytest.PytestUnraisableExceptionWarning)
_crashes: list[str] = []
_exit_status = {"code": 0}


def pytest_warning_recorded(warning_message, when, nodeid, location) -> None:  # noqa: ANN001
    if issubclass(warning_message.category, _CRASH_WARNINGS):
        first_line = str(warning_message.message).strip().splitlines()[0] if str(warning_message.message) else ""
        _crashes.append(f"{nodeid or when}: {warning_message.category.__name__}: {first_line}")


def _lingering_threads() -> list[str]:
    # concurrent.futures keeps its workers here so that interpreter exit can stop and join them
    pool_workers = set(getattr(concurrent.futures.thread, "_threads_queues", {}).keys())
    return [t.name for t in threading.enumerate()
            if t is not threading.main_thread() and t.is_alive() and not t.daemon and t not in pool_workers]


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001
    gc.collect()  # objects whose __del__ raises report now, while pytest still listens
    problems = list(_crashes)
    lingering = _lingering_threads()
    if lingering:
        problems.append(f"non-daemon threads still running at the end: {', '.join(lingering)}")
    if problems and int(exitstatus) in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _exit_status["code"] = int(session.exitstatus)
    _exit_status["problems"] = problems


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    problems = _exit_status.get("problems") or []
    if problems:
        terminalreporter.section("crashes outside the tests' assertions (they fail the run)", red=True)
        for line in problems:
            terminalreporter.line(line)


def pytest_unconfigure(config) -> None:  # noqa: ANN001
    """Leave without PySide's interpreter-exit cleanup once every result is written.

    After a suite that ran Qt windows beside engine and gRPC threads, PySide's atexit hook
    destroys the QApplication and can block for ever in QWidget's destructor on Qt's posted-event
    mutex (seen here: py-spy showed the main thread in PySide::destroyQCoreApplication). Each
    test already closed its windows and stopped its engine; only the process exit is skipped,
    with pytest's exit status (including the crash checks of ``pytest_sessionfinish``).
    """
    if "PySide6" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status["code"])
