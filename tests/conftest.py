"""Shared test settings: no display, no network beyond loopback, fast key derivation."""

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

_exit_status = {"code": 0}


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001
    _exit_status["code"] = int(exitstatus)


def pytest_unconfigure(config) -> None:  # noqa: ANN001
    """Leave without PySide's interpreter-exit cleanup once every result is written.

    After a suite that ran Qt windows beside engine and gRPC threads, PySide's atexit hook
    destroys the QApplication and can block for ever in QWidget's destructor on Qt's posted-event
    mutex (seen here: py-spy showed the main thread in PySide::destroyQCoreApplication). Each
    test already closed its windows and stopped its engine; only the process exit is skipped.
    """
    if "PySide6" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status["code"])
