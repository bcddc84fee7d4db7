"""Run ``run_gui`` as main.py does, in its own process: closes the window once the node trains.

Used by test_run_gui.py; prints the node state it saw and the exit code of run_gui.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.node import identity  # noqa: E402
from app.node.config import NodeConfig  # noqa: E402
from app.ui.app import run_gui  # noqa: E402
from app.wallet.keystore import Keystore  # noqa: E402

PASSWORD = "smoke-test-password"


def main(data_dir: Path) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    Keystore(data_dir, use_keyring=False, scrypt_n=2**14).create(PASSWORD)
    identity.provide_password(data_dir, PASSWORD)
    QApplication([])
    poll = QTimer()

    def close_when_training() -> None:
        windows = [w for w in QApplication.topLevelWidgets() if type(w).__name__ == "MainWindow"]
        if windows and windows[0].bridge.state.value == "training":
            print("state training", flush=True)
            poll.stop()
            windows[0].close()  # no tray offscreen: closing quits, which stops the node

    poll.timeout.connect(close_when_training)
    poll.start(200)
    QTimer.singleShot(60_000, QApplication.quit)  # never hang a test run
    code = run_gui(NodeConfig(data_dir=data_dir, port=0, training={"model": "tiny"},
                              economics={"preset": "devnet"}))
    print(f"exit {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
