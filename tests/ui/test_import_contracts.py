"""The import contracts of pyproject.toml hold, and the UI's contract names every node module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
UI_CONTRACT = "The UI sees the node through events, commands, values and the engine facade"
# What the UI may import of app.node, as the contract's comment in pyproject.toml explains.
UI_MAY_IMPORT = {"app.node.events", "app.node.values", "app.node.engine", "app.node.runtime_api",
                 "app.node.config", "app.node.identity", "app.node.autostart", "app.node.disk"}


def _contracts() -> list[dict]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["importlinter"]["contracts"]


def test_every_import_contract_is_kept() -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_the_ui_contract_forbids_every_node_module_it_does_not_allow() -> None:
    contract = next(c for c in _contracts() if c["name"] == UI_CONTRACT)
    node = ROOT / "app" / "node"
    modules = {f"app.node.{p.stem}" for p in node.glob("*.py") if p.stem != "__init__"}
    modules |= {f"app.node.{p.name}" for p in node.iterdir() if (p / "__init__.py").exists()}
    forbidden = set(contract["forbidden_modules"])
    assert not forbidden & UI_MAY_IMPORT
    assert modules - UI_MAY_IMPORT - forbidden == set(), "add the new module to the contract in pyproject.toml"


def test_the_layers_run_from_the_ui_down_to_the_keys() -> None:
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    assert layers[0] == "app.ui" and layers[-1] == "app.crypto"
    assert layers.index("app.wallet") < layers.index("app.node.training | app.node.p2p | app.node.economics")
