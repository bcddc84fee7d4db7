"""Start NeuroShard at login: the settings page's "start when I log in" switch, per platform.

- Linux and other XDG desktops: a .desktop file in ``$XDG_CONFIG_HOME/autostart`` (the
  freedesktop "Desktop Application Autostart Specification"); a desktop that lets the user
  switch it off writes ``Hidden=true`` or ``X-GNOME-Autostart-enabled=false``, which
  :func:`is_enabled` honours.
- macOS: a LaunchAgent plist in ``~/Library/LaunchAgents`` with ``RunAtLoad`` (launchd.plist(5)),
  limited to the graphical ("Aqua") session so an SSH login does not start a second node.
  Nothing is loaded now: the app is already running, and ``launchctl bootout`` of a loaded
  agent would kill the app that asked.
- Windows: a value under ``HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run``; Task
  Manager's "Disable" is recorded under ``...\\Explorer\\StartupApproved\\Run`` (odd first byte),
  which :func:`is_enabled` honours too.

Qt-free (the settings page and the installers use it). Everything is per user: no
administrator rights, and the entry points at the installed executable, never into the data dir.
"""

from __future__ import annotations

import configparser
import os
import plistlib
import subprocess
import sys
from pathlib import Path
from typing import Protocol
from xml.parsers.expat import ExpatError

APP_NAME = "NeuroShard"
LABEL = "org.neuroshard.node"  # the macOS bundle identifier, also the LaunchAgent label
DESKTOP_FILE = "neuroshard.desktop"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
APPROVED_KEY = r"Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run"

# Desktop Entry Specification, "The Exec key": an argument holding any of these must be quoted,
# and inside quotes these four must be escaped with a backslash.
_EXEC_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")
_EXEC_ESCAPED_IN_QUOTES = set('"`$\\')
# "Possible value types": the string-level escapes applied to the whole value afterwards.
_STRING_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


class AutostartError(Exception):
    """Start-at-login could not be read or changed; the message says what to fix."""


class AutostartBackend(Protocol):
    def enable(self, executable: str, args: list[str]) -> None: ...
    def disable(self) -> None: ...
    def is_enabled(self) -> bool: ...
    def command(self) -> list[str] | None: ...


def _check_command(executable: str, args: list[str]) -> list[str]:
    command = [executable, *args]
    if not executable or not os.path.isabs(executable):
        raise AutostartError(f"start-at-login needs the executable's absolute path, got {executable!r}")
    if any(ch in part for part in command for ch in "\n\r\0"):
        raise AutostartError("start-at-login arguments cannot contain line breaks or NUL characters")
    return command


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def quote_exec(command: list[str]) -> str:
    """An Exec= value: quote arguments that need it, double '%', then escape backslashes."""
    parts = []
    for arg in command:
        if arg and not (set(arg) & _EXEC_RESERVED):
            parts.append(arg.replace("%", "%%"))
            continue
        escaped = "".join("\\" + ch if ch in _EXEC_ESCAPED_IN_QUOTES else ch for ch in arg)
        parts.append('"' + escaped.replace("%", "%%") + '"')
    return " ".join(parts).replace("\\", "\\\\")


def split_exec(value: str) -> list[str]:
    """Inverse of :func:`quote_exec`; raises AutostartError on a malformed value."""
    unescaped, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value) and value[i + 1] in _STRING_ESCAPES:
            unescaped.append(_STRING_ESCAPES[value[i + 1]])
            i += 2
        else:
            unescaped.append(value[i])
            i += 1
    text, args, current, quoted, started, i = "".join(unescaped), [], [], False, False, 0
    while i < len(text):
        ch = text[i]
        if ch == "%" and text[i:i + 2] == "%%":
            current.append("%")
            started = True
            i += 1
        elif quoted and ch == "\\" and i + 1 < len(text) and text[i + 1] in _EXEC_ESCAPED_IN_QUOTES:
            current.append(text[i + 1])
            i += 1
        elif ch == '"':
            quoted, started = not quoted, True
        elif ch == " " and not quoted:
            if started:
                args.append("".join(current))
            current, started = [], False
        else:
            current.append(ch)
            started = True
        i += 1
    if quoted:
        raise AutostartError(f"unterminated quote in Exec={value!r}")
    if started:
        args.append("".join(current))
    return args


class XdgAutostart:
    """``<config_home>/autostart/neuroshard.desktop``."""

    def __init__(self, config_home: Path | None = None) -> None:
        default = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        self.path = (config_home or Path(default)) / "autostart" / DESKTOP_FILE

    def enable(self, executable: str, args: list[str]) -> None:
        command = _check_command(executable, args)
        text = "\n".join([
            "[Desktop Entry]", "Type=Application", f"Name={APP_NAME}",
            "Comment=Start NeuroShard Node when you log in", f"Exec={quote_exec(command)}",
            "Icon=neuroshard", "Terminal=false", "Hidden=false", "X-GNOME-Autostart-enabled=true", "",
        ])
        _write_atomically(self.path, text.encode("utf-8"))

    def disable(self) -> None:
        self.path.unlink(missing_ok=True)

    def _entry(self) -> dict[str, str] | None:
        if not self.path.is_file():
            return None
        parser = configparser.RawConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
        try:
            parser.read_string(self.path.read_text(encoding="utf-8"))
        except (configparser.Error, UnicodeDecodeError, OSError) as exc:
            raise AutostartError(f"cannot read {self.path}: {exc}; delete it and switch start-at-login on again") from exc
        return dict(parser["Desktop Entry"]) if parser.has_section("Desktop Entry") else None

    def is_enabled(self) -> bool:
        entry = self._entry()
        return (entry is not None and "Exec" in entry and entry.get("Hidden", "false").lower() != "true"
                and entry.get("X-GNOME-Autostart-enabled", "true").lower() != "false")

    def command(self) -> list[str] | None:
        entry = self._entry()
        return split_exec(entry["Exec"]) if entry and "Exec" in entry else None


def launch_agent_plist(executable: str, args: list[str]) -> bytes:
    """The LaunchAgent: run the app once at login in the user's graphical session."""
    command = _check_command(executable, args)
    return plistlib.dumps({
        "Label": LABEL,
        "ProgramArguments": command,
        "RunAtLoad": True,
        "KeepAlive": False,  # quitting the app from its tray must not restart it
        "ProcessType": "Interactive",
        "LimitLoadToSessionType": "Aqua",
    })


class MacLaunchAgent:
    """``<home>/Library/LaunchAgents/org.neuroshard.node.plist``."""

    def __init__(self, home: Path | None = None) -> None:
        self.path = (home or Path.home()) / "Library" / "LaunchAgents" / f"{LABEL}.plist"

    def enable(self, executable: str, args: list[str]) -> None:
        _write_atomically(self.path, launch_agent_plist(executable, args))

    def disable(self) -> None:
        self.path.unlink(missing_ok=True)

    def _agent(self) -> dict[str, object] | None:
        if not self.path.is_file():
            return None
        try:
            agent = plistlib.loads(self.path.read_bytes())
        except (plistlib.InvalidFileException, ExpatError, ValueError, OSError) as exc:
            raise AutostartError(f"cannot read {self.path}: {exc}; delete it and switch start-at-login on again") from exc
        return agent if isinstance(agent, dict) else None

    def is_enabled(self) -> bool:
        agent = self._agent()
        return agent is not None and agent.get("RunAtLoad") is True and agent.get("Disabled") is not True

    def command(self) -> list[str] | None:
        agent = self._agent()
        arguments = agent.get("ProgramArguments") if agent else None
        return [str(a) for a in arguments] if isinstance(arguments, list) else None


class WindowsRunKey:
    """The per-user Run key; the value is one command line in CommandLineToArgvW quoting."""

    def __init__(self, value_name: str = APP_NAME) -> None:
        import winreg  # Windows only

        self._winreg = winreg
        self.value_name = value_name

    def _read(self, subkey: str) -> object | None:
        try:
            with self._winreg.OpenKey(self._winreg.HKEY_CURRENT_USER, subkey) as key:
                return self._winreg.QueryValueEx(key, self.value_name)[0]
        except FileNotFoundError:
            return None

    def enable(self, executable: str, args: list[str]) -> None:
        line = subprocess.list2cmdline(_check_command(executable, args))
        with self._winreg.CreateKey(self._winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            self._winreg.SetValueEx(key, self.value_name, 0, self._winreg.REG_SZ, line)

    def disable(self) -> None:
        for subkey in (RUN_KEY, APPROVED_KEY):  # a stale "disabled" mark would hide a later enable
            try:
                with self._winreg.OpenKey(self._winreg.HKEY_CURRENT_USER, subkey, 0,
                                          self._winreg.KEY_SET_VALUE) as key:
                    self._winreg.DeleteValue(key, self.value_name)
            except FileNotFoundError:
                pass

    def is_enabled(self) -> bool:
        if not self._read(RUN_KEY):
            return False
        approved = self._read(APPROVED_KEY)
        return not (isinstance(approved, bytes) and approved and approved[0] & 1)

    def command(self) -> list[str] | None:
        line = self._read(RUN_KEY)
        return [str(line)] if line else None


def backend(platform: str = sys.platform) -> AutostartBackend:
    if platform == "win32":
        return WindowsRunKey()
    if platform == "darwin":
        return MacLaunchAgent()
    return XdgAutostart()


def launch_command() -> tuple[str, list[str]]:
    """What start-at-login should run: the installed app, or this interpreter and main.py from source."""
    if os.environ.get("APPIMAGE"):
        # Inside an AppImage sys.executable lies in a mount point that changes every run; the
        # AppImage runtime names the image file itself in $APPIMAGE.
        return os.environ["APPIMAGE"], []
    if getattr(sys, "frozen", False):
        executable = Path(sys.executable)
        if sys.platform == "win32" and executable.stem.endswith("-cli"):
            # Log in to the windowed twin, not a console window.
            executable = executable.with_name(f"{APP_NAME}.exe")
        return str(executable), []
    import importlib.util

    spec = importlib.util.find_spec("app")
    if spec is None or spec.origin is None:
        raise AutostartError("cannot locate the app package to build a start-at-login command from source")
    return sys.executable, [str(Path(spec.origin).resolve().parents[1] / "main.py")]


def enable(executable: str, args: list[str]) -> None:
    backend().enable(executable, args)


def disable() -> None:
    backend().disable()


def is_enabled() -> bool:
    return backend().is_enabled()


def set_enabled(enabled: bool) -> None:
    """The settings page's switch: register the app as it runs now, or remove the entry."""
    if enabled:
        enable(*launch_command())
    else:
        disable()
