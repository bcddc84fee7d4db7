"""GUI test fixtures: offscreen Qt, a data dir with a cached hardware report of a set tier, and the
whole app built without entering its event loop, on a real NodeEngine running the node's real
runtime (app/node/runtime: solo genesis network, tiny model, gRPC on an ephemeral loopback port).

Every wallet the fixtures create is funded at genesis (tests/ui/funded_ledger.py: signed records
in the node's own ledger, written before the node starts), so the wallet and governance pages have
coins to send, stake and vote with. ``gui`` is a fresh app per test; ``shared_gui`` is one app
shared by a whole test module (a node takes seconds to start on a 2-core machine), for tests that
only add records, so its tests compare before and after rather than expect exact balances.

A wait in these tests only bounds a hang (``qtbot`` below): each one lasts up to at least
``HANG_MS``, whatever the call site names, because a real node's answer takes seconds on a
loaded 2-core machine and a loaded machine must still pass.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication  # noqa: E402
from pytestqt.qtbot import QtBot  # noqa: E402

# One QApplication for the whole session, made at collection: a test elsewhere that creates a bare
# QGuiApplication first (app/selftest.py's offscreen grab) would leave no way to make widgets.
_QAPP = QApplication.instance() or QApplication(["neuroshard-tests"])

from app.node import identity  # noqa: E402
from app.node.config import NodeConfig  # noqa: E402
from tests.ui.funded_ledger import PASSWORD, devnet_economics, fast_keystore, fund_at_genesis  # noqa: E402

HANG_MS = 120_000
"""The least a qtbot wait lasts in GUI tests before it fails: long enough to mean a hang."""


class PatientQtBot(QtBot):
    """pytest-qt's bot whose waits never fail on a slow machine before ``HANG_MS``: the numbers
    written at the call sites (2-10 s, from quiet machines) become at least ``HANG_MS``. A wait
    with ``raising=False`` is a deliberate bounded wait and keeps its own timeout."""

    def waitUntil(self, callback, *, timeout: int = HANG_MS) -> None:  # noqa: ANN001, N802 (pytest-qt's names)
        super().waitUntil(callback, timeout=max(timeout, HANG_MS))

    def waitSignal(self, signal, *, timeout: int = HANG_MS, raising: bool | None = None,  # noqa: ANN001, ANN201, N802
                   check_params_cb=None):  # noqa: ANN001
        return super().waitSignal(signal, timeout=_patient(timeout, raising), raising=raising,
                                  check_params_cb=check_params_cb)

    def waitSignals(self, signals, *, timeout: int = HANG_MS, raising: bool | None = None,  # noqa: ANN001, ANN201, N802
                    check_params_cbs=None, order="none"):  # noqa: ANN001
        return super().waitSignals(signals, timeout=_patient(timeout, raising), raising=raising,
                                   check_params_cbs=check_params_cbs, order=order)

    def waitCallback(self, *, timeout: int = HANG_MS, raising: bool | None = None):  # noqa: ANN201, N802
        return super().waitCallback(timeout=_patient(timeout, raising), raising=raising)

    def waitExposed(self, widget, *, timeout: int = HANG_MS):  # noqa: ANN001, ANN201, N802
        return super().waitExposed(widget, timeout=max(timeout, HANG_MS))

    def waitActive(self, widget, *, timeout: int = HANG_MS):  # noqa: ANN001, ANN201, N802
        return super().waitActive(widget, timeout=max(timeout, HANG_MS))


def _patient(timeout: int, raising: bool | None) -> int:
    return timeout if raising is False or timeout <= 0 else max(timeout, HANG_MS)


@pytest.fixture
def qtbot(qapp, request: pytest.FixtureRequest) -> PatientQtBot:  # noqa: ANN001 (pytest-qt's qapp)
    return PatientQtBot(request)


SET_MS_PER_LAYER = 300.0
"""The speed every GUI test's node believes it measured: tier T4 (pipeline yes, inference no), the
same on a quick T3 machine and a loaded T5 one, so no test depends on this machine's speed."""


@pytest.fixture(scope="session")
def measured_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One hardware report per session, of a set tier, cached like the engine caches a measurement."""
    import time

    import torch

    from app.node import hardware

    path = tmp_path_factory.mktemp("hardware")
    report = hardware.HardwareReport(hardware.detect_device("cpu"), SET_MS_PER_LAYER,
                                     hardware.tier_for_ms(SET_MS_PER_LAYER), torch.__version__, time.time())
    hardware.save_cache(path, report)
    return path


def new_data_dir(root: Path, measured_dir: Path) -> Path:
    path = root / "data"
    path.mkdir()
    shutil.copy(measured_dir / "hardware.json", path / "hardware.json")
    return path


def node_config(data_dir: Path) -> NodeConfig:
    # port 0: the OS picks a free loopback port, so parallel test runs never collide.
    return NodeConfig(data_dir=data_dir, device="cpu", host="127.0.0.1", port=0, devnet=True,
                      training={"model": "tiny"}, economics=devnet_economics())


def funded_wallet(data_dir: Path) -> None:
    """A wallet (not a first run) funded at genesis, its password handed to the node as the app's
    unlock dialog does."""
    fast_keystore(data_dir).create(PASSWORD)
    fund_at_genesis(data_dir, devnet_economics())
    identity.provide_password(data_dir, PASSWORD)


@pytest.fixture
def data_dir(tmp_path: Path, measured_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # start-at-login, location.json stay in tmp
    return new_data_dir(tmp_path, measured_dir)


@pytest.fixture
def config(data_dir: Path) -> NodeConfig:
    return node_config(data_dir)


@pytest.fixture
def wallet_dir(data_dir: Path) -> Iterator[Path]:
    funded_wallet(data_dir)
    yield data_dir
    identity.forget_password(data_dir)


@pytest.fixture
def locked_wallet_dir(data_dir: Path) -> Iterator[Path]:
    """A wallet whose password nobody has given yet: the app must ask."""
    fast_keystore(data_dir).create(PASSWORD)
    yield data_dir
    identity.forget_password(data_dir)


def launched(config: NodeConfig) -> Iterator:  # noqa: ANN201
    from app.ui.app import GuiApp

    app = GuiApp(config, keystore_factory=fast_keystore)
    app.launch()
    yield app
    app.dispose()


@pytest.fixture
def gui(qtbot, config: NodeConfig, wallet_dir: Path) -> Iterator:  # noqa: ANN001 (pytest-qt fixture)
    """The whole app on the real engine and runtime, a fresh node for this test."""
    yield from launched(config)


@pytest.fixture(scope="module")
def shared_gui(tmp_path_factory: pytest.TempPathFactory, measured_dir: Path) -> Iterator:
    """The whole app on the real engine and runtime, one node for the whole test module."""
    root = tmp_path_factory.mktemp("shared")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(root / "xdg"))
        data_dir = new_data_dir(root, measured_dir)
        funded_wallet(data_dir)
        try:
            yield from launched(node_config(data_dir))
        finally:
            identity.forget_password(data_dir)
