"""Seconds since the volunteer last touched keyboard or mouse, system-wide, per platform.

BOINC and Folding@home define "idle" by input, not by CPU load (a video call is busy but the
user is present). Windows: ``GetLastInputInfo``; macOS: the HID system's ``HIDIdleTime``; Linux
X11: the XScreenSaver extension (``libXss``); Linux Wayland: GNOME's compositor over D-Bus, since
XWayland's own counter only sees input to X11 windows and would call a volunteer typing in a
Wayland app idle. Where none answers (another Wayland compositor, a headless box) ``None`` is returned and the caller treats the machine as in use, the safe side:
with only_when_idle the node then stays paused, otherwise the in-use caps apply (activity_guard).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import subprocess
import sys

_MUTTER_IDLE = ["gdbus", "call", "--session", "--dest", "org.gnome.Mutter.IdleMonitor",
                "--object-path", "/org/gnome/Mutter/IdleMonitor/Core",
                "--method", "org.gnome.Mutter.IdleMonitor.GetIdletime"]


def idle_seconds() -> float | None:
    try:
        if sys.platform == "win32":
            return _windows()
        if sys.platform == "darwin":
            return _macos()
        if os.environ.get("WAYLAND_DISPLAY"):
            return _wayland()
        return _x11()
    except (OSError, ValueError, AttributeError, subprocess.SubprocessError):
        return None


def _windows() -> float | None:  # pragma: no cover - Windows only
    class LastInputInfo(ctypes.Structure):
        _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint)]

    info = LastInputInfo()
    info.cbSize = ctypes.sizeof(info)
    if not ctypes.windll.user32.GetLastInputInfo(ctypes.byref(info)):  # type: ignore[attr-defined]
        return None
    millis = ctypes.windll.kernel32.GetTickCount() - info.dwTime  # type: ignore[attr-defined]
    return millis / 1000.0


def _macos() -> float | None:  # pragma: no cover - macOS only
    out = subprocess.run(["ioreg", "-c", "IOHIDSystem"], capture_output=True, text=True, timeout=2).stdout
    match = re.search(r'"HIDIdleTime" = (\d+)', out)
    return int(match.group(1)) / 1e9 if match else None


def _wayland() -> float | None:
    result = subprocess.run(_MUTTER_IDLE, capture_output=True, text=True, timeout=2)
    return mutter_idle_seconds(result.stdout) if result.returncode == 0 else None


def mutter_idle_seconds(reply: str) -> float | None:
    """``gdbus``'s text for GetIdletime, "(uint64 12345,)" in milliseconds, as seconds."""
    match = re.fullmatch(r"\(uint64 (\d+),\)", reply.strip())
    return int(match.group(1)) / 1000.0 if match else None


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [("window", ctypes.c_ulong), ("state", ctypes.c_int), ("kind", ctypes.c_int),
                ("til_or_since", ctypes.c_ulong), ("idle", ctypes.c_ulong), ("eventMask", ctypes.c_ulong)]


def _x11() -> float | None:
    xlib_name, xss_name = ctypes.util.find_library("X11"), ctypes.util.find_library("Xss")
    if not xlib_name or not xss_name:
        return None
    xlib, xss = ctypes.cdll.LoadLibrary(xlib_name), ctypes.cdll.LoadLibrary(xss_name)
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    display = xlib.XOpenDisplay(None)
    if not display:
        return None
    try:
        xlib.XDefaultRootWindow.restype = ctypes.c_ulong
        xlib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        root = xlib.XDefaultRootWindow(display)
        xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
        info = xss.XScreenSaverAllocInfo()
        if not info:
            return None
        xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(_XScreenSaverInfo)]
        xlib.XFree.argtypes = [ctypes.c_void_p]
        try:  # the query runs every check (it also picks the caps now): free the info every time
            if not xss.XScreenSaverQueryInfo(display, root, info):
                return None
            return info.contents.idle / 1000.0
        finally:
            xlib.XFree(info)
    finally:
        xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
        xlib.XCloseDisplay(display)
