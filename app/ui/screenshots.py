"""Render every page, wizard step and dialog offscreen to PNG files, from a demo engine state.

    python -m app.ui.screenshots --out DIR [--theme light|dark|both] [--size 1100x760]

With ``both`` (the default) the light set goes to DIR/light and the dark one to DIR/dark.
Anyone can review the UI this way without running a network. No torch, no sockets.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

WIZARD_STEPS = ("welcome", "wallet", "phrase", "confirm", "hardware", "modes", "limits", "reach", "join")
DIALOGS = ("start-failure", "unlock", "send", "stake", "propose", "damaged-checkpoint", "migration")
THEMES = ("light", "dark")


def _parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"'{text}' is not WIDTHxHEIGHT, e.g. 1100x760")
    return int(width), int(height)


def _settle(app: object, rounds: int = 5) -> None:
    for _ in range(rounds):
        app.processEvents()  # type: ignore[attr-defined]


def render_pages(out: Path, data_dir: Path, size: tuple[int, int]) -> list[Path]:
    from PySide6.QtWidgets import QApplication

    from app.node.config import NodeConfig
    from app.ui.bridge import EngineBridge
    from app.ui.demo import DemoEngine
    from app.ui.main_window import MainWindow
    from app.ui.ui_settings import UiSettings

    app = QApplication.instance()
    config = NodeConfig(data_dir=data_dir, trackers=("tracker.neuroshard.net:7450",))
    bridge = EngineBridge()
    window = MainWindow(bridge, config, UiSettings(data_dir))
    window.resize(*size)
    engine = DemoEngine()
    bridge.attach(engine)
    engine.play()
    _settle(app)
    bridge.ready.emit()
    _settle(app)
    for chart in (window.dashboard.loss_chart, window.dashboard.speed_chart):
        chart.redraw()
    window.governance.table.selectRow(0)
    window.show()
    written = []
    for index, page in enumerate(window.pages):
        window.show_page(index)
        _settle(app)
        path = out / f"page-{index + 1:02d}-{page.title.lower().replace(' ', '-')}.png"
        window.grab().save(str(path))
        written.append(path)
    window.hide()
    return written


def render_wizard(out: Path, data_dir: Path) -> list[Path]:
    """Each step as the first page of a fresh wizard (QWizard has no public "go to page")."""
    from PySide6.QtWidgets import QApplication

    from app.node.config import NodeConfig
    from app.node.events import HardwareMeasured
    from app.ui.wizard.state import PageId
    from app.ui.wizard.wizard import FirstRunWizard
    from app.wallet import phrase

    app = QApplication.instance()
    written = []
    for step, page_id in zip(WIZARD_STEPS, PageId, strict=True):
        wizard = FirstRunWizard(NodeConfig(data_dir=data_dir / "wizard"))
        state = wizard.state
        state.phrase = phrase.encode(bytes(range(1, 33)))  # a fixed demo secret, never a real key
        state.address = "ns1" + "5f3a" * 12
        state.created = True
        state.modes = ("pipeline", "data", "inference")
        state.hardware = HardwareMeasured(device="cuda", device_name="NVIDIA GeForce RTX 3060",
                                          memory_bytes=12 * 2**30, ms_per_layer=14.2, tier="T2")
        wizard.setStartId(page_id)
        wizard.restart()
        wizard.show()
        _settle(app)
        path = out / f"wizard-{page_id + 1}-{step}.png"
        wizard.grab().save(str(path))
        written.append(path)
        wizard.hide()
        wizard.deleteLater()
    return written


DEMO_PLAN = {  # a dry run as engine.migration_plan returns it (figures of a 16 -> 18 layer upgrade)
    "from": {"version": 1, "layers": 16, "hidden": 768, "parameters": 99_500_000},
    "to": {"version": 2, "layers": 18, "hidden": 896, "parameters": 131_200_000},
    "growth": {"depth": {"inserted": 2, "insert_at": 8}},
    "this_node": {"layers_after": [0, 9], "fits": True, "memory_budget_bytes": 6 * 1024**3,
                  "memory_needed_bytes": int(2.4 * 1024**3)},
    "disk": {"needed_bytes": int(1.1 * 1024**3), "free_bytes": 48 * 1024**3, "enough": True},
    "estimated_seconds": 14.0, "estimate_assumes": "100 MB/s disk writes",
    "backup_dir": "~/.local/share/neuroshard/migration/backup-v1",
}


def render_dialogs(out: Path, data_dir: Path) -> list[Path]:
    """The dialogs a volunteer meets, each filled as it would be (demo values, no real key)."""
    from PySide6.QtWidgets import QApplication, QWidget

    from app.node.config import NodeConfig
    from app.node.events import CheckpointDecisionNeeded, UpgradeAvailable
    from app.node.values import UNITS_PER_NEURO
    from app.ui.bridge import EngineBridge
    from app.ui.checkpoint_prompt import CorruptCheckpointPrompt
    from app.ui.controller import NodeController
    from app.ui.migration_dialog import MigrationDialog
    from app.ui.widgets.proposal_dialog import ProposalDialog
    from app.ui.widgets.start_failure import StartFailureDialog
    from app.ui.widgets.wallet_dialogs import PasswordDialog, SendDialog, StakeDialog

    app = QApplication.instance()
    bridge = EngineBridge()
    prompt = CorruptCheckpointPrompt(bridge)
    prompt.ask(CheckpointDecisionNeeded(reason="checkpoints/stage.safetensors: hash mismatch; the copy too"))
    assert prompt.dialog is not None
    dialogs: dict[str, QWidget] = {
        "start-failure": StartFailureDialog("cannot listen on 0.0.0.0:7450: Failed to bind to address 0.0.0.0:7450"),
        "unlock": PasswordDialog("Unlock your wallet", "The node signs its proofs of work with your wallet key. "
                                 "Type your wallet password to start it; the password stays in memory only."),
        "send": SendDialog(125 * UNITS_PER_NEURO),
        "stake": StakeDialog("stake", 125 * UNITS_PER_NEURO),
        "propose": ProposalDialog(1_000 * UNITS_PER_NEURO),
        "damaged-checkpoint": prompt.dialog,
        "migration": MigrationDialog(
            NodeController(bridge, NodeConfig(data_dir=data_dir)),
            UpgradeAvailable(current_version=1, candidate_version=2, current_parameters=DEMO_PLAN["from"]["parameters"],
                             candidate_parameters=DEMO_PLAN["to"]["parameters"]),
            notify=lambda _title, _text: None, dry_run=lambda: DEMO_PLAN),
    }
    written = []
    migration = dialogs["migration"]
    for _ in range(200):  # its dry run arrives from a worker thread
        if getattr(migration, "plan", None) is not None:
            break
        _settle(app)
        time.sleep(0.01)
    for index, name in enumerate(DIALOGS, start=1):
        dialog = dialogs[name]
        dialog.show()
        _settle(app)
        path = out / f"dialog-{index}-{name}.png"
        dialog.grab().save(str(path))
        written.append(path)
        dialog.hide()
        dialog.deleteLater()
    return written


def render_all(out: Path, size: tuple[int, int]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="neuroshard-shots-") as tmp:
        return render_pages(out, Path(tmp), size) + render_wizard(out, Path(tmp)) + render_dialogs(out, Path(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.ui.screenshots", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    parser.add_argument("--theme", choices=(*THEMES, "both"), default="both")
    parser.add_argument("--size", type=_parse_size, default=(1100, 760), help="window size, e.g. 1100x760")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app.ui.theme import apply_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    themes = THEMES if args.theme == "both" else (args.theme,)
    written = []
    for theme in themes:
        apply_theme(app, theme)
        written += render_all(args.out / theme if args.theme == "both" else args.out, args.size)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
