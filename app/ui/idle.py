"""Seconds since the volunteer last touched keyboard or mouse, system-wide, per platform.

BOINC and Folding@home define "idle" by input, not by CPU load (a video call is busy but the
user is present). Windows: ``GetLastInputInfo``; macOS: the HID system's ``HIDIdleTime``; Linux
X11: the XScreenSaver extension (``libXss``). Where none answers (Wayland without a portal, a
headless box) ``None`` is returned and the caller treats the machine as in use, the safe side:
with only_when_idle the node then stays paused, otherwise the in-use caps apply (activity_guard).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import subprocess
import sys


def idle_seconds() -> float | None:
    try:
        if sys.platform == "win32":
            return _windows()
        if sys.platform == "darwin":
            return _macos()
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
