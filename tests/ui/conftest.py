"""GUI test fixtures: offscreen Qt, a data dir with a real (cached) hardware measurement, and the
whole app built without entering its event loop, on a real NodeEngine.

``gui`` runs the node's real runtime (app/node/runtime: solo genesis network, tiny model, gRPC on
an ephemeral loopback port). ``ledger_gui`` runs tests/ui/devnet_runtime.py, which funds the
wallet at genesis and seeds proposals on the real ledger: the real runtime does not answer wallet
queries yet, and a fresh node has nothing to send, stake or vote with.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication  # noqa: E402

# One QApplication for the whole session, made at collection: a test elsewhere that creates a bare
# QGuiApplication first (app/selftest.py's offscreen grab) would leave no way to make widgets.
_QAPP = QApplication.instance() or QApplication(["neuroshard-tests"])

from app.node import identity  # noqa: E402
from app.node.config import NodeConfig  # noqa: E402
from tests.ui.devnet_runtime import PASSWORD, DevnetOptions, DevnetRuntime, fast_keystore  # noqa: E402


@pytest.fixture(scope="session")
def measured_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real hardware measurement per session, cached like the engine caches it."""
    from app.node import hardware

    path = tmp_path_factory.mktemp("hardware")
    hardware.measure_or_cached(path, "cpu")
    return path


@pytest.fixture
def data_dir(tmp_path: Path, measured_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    shutil.copy(measured_dir / "hardware.json", path / "hardware.json")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # start-at-login writes stay in tmp
    return path


@pytest.fixture
def config(data_dir: Path) -> NodeConfig:
    # port 0: the OS picks a free loopback port, so parallel test runs never collide.
    return NodeConfig(data_dir=data_dir, device="cpu", host="127.0.0.1", port=0, devnet=True,
                      training={"model": "tiny"}, economics={"preset": "devnet"})


@pytest.fixture
def wallet_dir(data_dir: Path) -> Iterator[Path]:
    """A data dir that already holds a wallet (not a first run), its password handed to the node
    as the app's unlock dialog does."""
    fast_keystore(data_dir).create(PASSWORD)
    identity.provide_password(data_dir, PASSWORD)
    yield data_dir
    identity.forget_password(data_dir)


@pytest.fixture
def locked_wallet_dir(data_dir: Path) -> Iterator[Path]:
    """A wallet whose password nobody has given yet: the app must ask."""
    fast_keystore(data_dir).create(PASSWORD)
    yield data_dir
    identity.forget_password(data_dir)


def devnet_factory(options: DevnetOptions | None = None):  # noqa: ANN201 (a RuntimeFactory)
    return lambda ctx: DevnetRuntime(ctx, options)


def _launched(qtbot, config: NodeConfig, runtime_factory) -> Iterator:  # noqa: ANN001
    from app.ui.app import GuiApp

    app = GuiApp(config, runtime_factory=runtime_factory, keystore_factory=fast_keystore)
    app.launch()
    yield app
    app.dispose()


@pytest.fixture
def gui(qtbot, config: NodeConfig, wallet_dir: Path) -> Iterator:  # noqa: ANN001 (pytest-qt fixture)
    """The whole app on the real engine and the node's real runtime."""
    yield from _launched(qtbot, config, None)


@pytest.fixture
def ledger_gui(qtbot, config: NodeConfig, wallet_dir: Path) -> Iterator:  # noqa: ANN001 (pytest-qt fixture)
    """The whole app on the real engine with the devnet runtime (funded wallet, seeded proposals)."""
    yield from _launched(qtbot, config, devnet_factory())
