"""Export diagnostics: one zip a volunteer can attach to a bug report, with no secrets in it.

Included: versions and platform, the node settings (config.toml as the node reads it), the
hardware measurement, the recent log lines the app saw and the tail of ``logs/node.log``. Never
included: the keystore, wallet files, the ledger. Lines that mention passwords, phrases or keys are
redacted as a second line of defence (the node never logs them, but a third-party library might).
"""

from __future__ import annotations

import json
import platform
import re
import sys
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path

import tomli_w

from app.node.config import NodeConfig, to_toml_dict

LOG_TAIL_BYTES = 512 * 1024  # enough for a few thousand lines of context, small enough to e-mail
_SECRET = re.compile(r"(password|passphrase|phrase|secret|private[_ ]?key|mnemonic|seed words)\s*[=:]?\s*\S+",
                     re.IGNORECASE)
_HEX_KEY = re.compile(r"\b[0-9a-fA-F]{64}\b")  # a raw 32-byte secret written as hex


def redact(line: str) -> str:
    line = _SECRET.sub(lambda m: f"{m.group(1)}=<redacted>", line)
    return _HEX_KEY.sub("<redacted-hex>", line)


def _versions() -> str:
    from PySide6 import __version__ as pyside_version

    return "\n".join((
        f"created: {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
        f"python: {sys.version.split()[0]}",
        f"platform: {platform.platform()}",
        f"machine: {platform.machine()}",
        f"pyside6: {pyside_version}",
    )) + "\n"


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(redact(line) for line in data.decode("utf-8", errors="replace").splitlines()) + "\n"


def write_diagnostics(path: Path, config: NodeConfig, app_lines: Iterable[str]) -> Path:
    """Write the zip to ``path``; raises OSError (disk full, no permission) for the caller to show."""
    settings = tomli_w.dumps(to_toml_dict(config))
    hardware = config.data_dir / "hardware.json"
    try:
        hardware_text = json.dumps(json.loads(hardware.read_text()), indent=2)
    except (OSError, ValueError):
        hardware_text = "not measured yet"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("versions.txt", _versions())
        archive.writestr("config.toml", "\n".join(redact(line) for line in settings.splitlines()) + "\n")
        archive.writestr("hardware.json", hardware_text)
        archive.writestr("app-log.txt", "\n".join(redact(line) for line in app_lines) + "\n")
        archive.writestr("node-log-tail.txt", _log_tail(config.log_dir / "node.log"))
    return path
