"""Load modules from packaging/ by file path.

packaging/ has no __init__.py on purpose: a regular package named ``packaging`` at the repo root
would shadow the PyPI ``packaging`` library that pip, setuptools and PyInstaller import. Its
modules import each other as top-level names (the spec and build.py put packaging/ on sys.path),
so the folder goes on sys.path for these tests only, under names no installed package uses.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

PACKAGING_DIR = Path(__file__).resolve().parents[2] / "packaging"


def load(name: str) -> ModuleType:
    if str(PACKAGING_DIR) not in sys.path:
        sys.path.append(str(PACKAGING_DIR))  # appended: never shadows an installed module
    module = importlib.import_module(name)
    assert Path(module.__file__).parent == PACKAGING_DIR, f"{name} resolved to {module.__file__}"
    return module


@pytest.fixture(scope="session")
def layout() -> ModuleType:
    return load("bundle_layout")


@pytest.fixture(scope="session")
def autostart() -> ModuleType:
    # Start-at-login is used by the app at run time, so it lives in app/node (Qt-free).
    return importlib.import_module("app.node.autostart")


@pytest.fixture(scope="session")
def icon_maker() -> ModuleType:
    return load("icon_maker")


@pytest.fixture(scope="session")
def smoke() -> ModuleType:
    return load("smoke")
