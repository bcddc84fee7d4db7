"""Moving the data dir from Settings: stop the node, copy in the background, remember, restart.

The steps, each off the GUI thread where it can take time:

1. the node stops (it finishes its step and checkpoints: nothing may write while we copy);
2. the data is copied atomically to the new folder (app/ui/data_dir_copy.py), with progress and
   a Cancel; a folder that already holds a node's data is used as is, nothing is copied;
3. the new folder is recorded where the app looks at start (config.remember_data_dir).

Then ``moved(new_dir)`` tells the app to restart the node there; on any failure ``failed(text)``
tells it to restart the node on the old folder, which is untouched either way (it is only read).
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.node.config import remember_data_dir
from app.ui.controller import NodeController
from app.ui.data_dir_copy import MoveError, copy_data_dir
from app.ui.tasks import run_background


class DataDirMove(QObject):
    progress = Signal(int, int)  # bytes copied, bytes in all (emitted from the copy thread; queued)
    stage = Signal(str)  # what is happening, in words
    moved = Signal(object)  # the new data dir (Path)
    failed = Signal(str)

    def __init__(self, controller: NodeController, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.running = False
        self._cancel = threading.Event()
        self._last_percent = -1

    def begin(self, source: Path, target: Path, use_existing: bool) -> bool:
        """Start a move (the target was checked with ``check_target``); False if one is running."""
        if self.running:
            return False
        self.running = True
        self._cancel.clear()
        self._last_percent = -1
        self.stage.emit("Stopping the node (it finishes its current step and saves)…")

        def stopped(ended: object) -> None:
            if not ended:
                self._fail("the node did not stop in time, so nothing was copied; try again in a minute")
            elif self._cancel.is_set():
                self._fail("the move was cancelled; the data folder was not changed")
            elif use_existing:
                self._copied(target)
            else:
                self.stage.emit(f"Copying the data to {target}…")
                run_background(lambda: copy_data_dir(source, target, self._report, self._cancel),
                               lambda _none: self._copied(target), self._fail)

        self.controller.stop_in_background(stopped)
        return True

    def cancel(self) -> None:
        """Stop copying; whatever was copied is removed and the node restarts on the old folder."""
        self._cancel.set()

    def _report(self, done: int, total: int) -> None:
        percent = 100 if total == 0 else done * 100 // total
        if percent != self._last_percent:  # at most 101 signals, however large the data
            self._last_percent = percent
            self.progress.emit(done, total)

    def _copied(self, target: Path) -> None:
        try:
            remember_data_dir(target)
        except OSError as exc:
            self._fail(f"the data was copied to {target}, but the app cannot record the new location ({exc}); "
                       "the old data folder is still in use")
            return
        self.running = False
        self.moved.emit(target)

    def _fail(self, message: str) -> None:
        self.running = False
        self.failed.emit(message)


__all__ = ["DataDirMove", "MoveError"]
