"""Start at login: the per-user autostart entry of each desktop platform.

Linux: an XDG autostart ``.desktop`` file; macOS: a LaunchAgent plist; Windows: the HKCU ``Run``
key. Each points at the running executable (the frozen app) or ``python main.py`` from source.
"""

from __future__ import annotations

import os
import plistlib
import sys
from pathlib import Path

ENTRY_NAME = "neuroshard-node"
LAUNCH_AGENT_LABEL = "org.neuroshard.node"


class AutostartError(OSError):
    """The autostart entry could not be written or removed; the message says where."""


def launch_command() -> list[str]:
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, str(Path(__file__).resolve().parents[2] / "main.py")]


def _xdg_path() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "autostart" / f"{ENTRY_NAME}.desktop"


def _mac_path() -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"


def entry_path() -> Path | None:
    if sys.platform.startswith("linux"):
        return _xdg_path()
    if sys.platform == "darwin":
        return _mac_path()
    return None


def is_enabled() -> bool:
    if sys.platform == "win32":
        return _windows_get() is not None
    path = entry_path()
    return path is not None and path.exists()


def set_enabled(enabled: bool) -> None:
    try:
        if sys.platform == "win32":
            _windows_set(enabled)
            return
        path = entry_path()
        if path is None:
            raise AutostartError(f"start at login is not supported on {sys.platform}")
        if not enabled:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if sys.platform == "darwin":
            path.write_bytes(plistlib.dumps({"Label": LAUNCH_AGENT_LABEL, "ProgramArguments": launch_command(),
                                             "RunAtLoad": True}))
        else:
            exec_line = " ".join(f'"{part}"' for part in launch_command())
            path.write_text("[Desktop Entry]\nType=Application\nName=NeuroShard Node\n"
                            f"Exec={exec_line}\nX-GNOME-Autostart-enabled=true\n", encoding="utf-8")
    except OSError as exc:
        raise AutostartError(f"cannot change start at login: {exc.strerror or exc}") from exc


def _windows_get() -> str | None:  # pragma: no cover - Windows only
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, r"Software\Microsoft\Windows\CurrentVersion\Run") as key:
            return str(winreg.QueryValueEx(key, ENTRY_NAME)[0])
    except OSError:
        return None


def _windows_set(enabled: bool) -> None:  # pragma: no cover - Windows only
    import winreg

    path = r"Software\Microsoft\Windows\CurrentVersion\Run"
    with winreg.OpenKey(winreg.HKEY_CURRENT_USER, path, 0, winreg.KEY_SET_VALUE) as key:
        if enabled:
            winreg.SetValueEx(key, ENTRY_NAME, 0, winreg.REG_SZ, " ".join(f'"{p}"' for p in launch_command()))
        elif _windows_get() is not None:
            winreg.DeleteValue(key, ENTRY_NAME)
