"""What is checked before the window or the node starts, so a failure is seen, not lost.

* ``display_problem``: with no display at all (a server, an SSH session) or without the X11
  libraries a Qt window needs (PLATFORM.md: Qt aborts naming only libxcb-cursor0 even when
  another one is missing), the app prints one line naming the problem and the fix and exits 2
  instead of aborting.
* ``port_for_start``: a fixed port another program holds falls back to a free one for this start,
  and the volunteer is told which.
"""

from __future__ import annotations

import ctypes.util
import dataclasses
import errno
import os
import socket
import sys
from collections.abc import Callable, Mapping

from app.node.config import NodeConfig

# Library (as ctypes finds it) -> Debian/Ubuntu package: what Qt's xcb plugin loads (PLATFORM.md).
XCB_LIBRARIES = {
    "xcb-cursor": "libxcb-cursor0", "xcb-icccm": "libxcb-icccm4", "xcb-image": "libxcb-image0",
    "xcb-keysyms": "libxcb-keysyms1", "xcb-render": "libxcb-render0", "xcb-render-util": "libxcb-render-util0",
    "xcb-shape": "libxcb-shape0", "xcb-util": "libxcb-util1", "xcb-xkb": "libxcb-xkb1",
    "xkbcommon-x11": "libxkbcommon-x11-0",
}


def display_problem(env: Mapping[str, str] = os.environ, platform: str = sys.platform,
                    find_library: Callable[[str], str | None] = ctypes.util.find_library) -> str | None:
    """Why no window can open here, with the fix; None when one can (or Qt was told a platform)."""
    if env.get("QT_QPA_PLATFORM") or not platform.startswith("linux"):
        return None
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return ("no display to open a window on (DISPLAY and WAYLAND_DISPLAY are not set): start NeuroShard "
                "from a desktop session, or run the node without a window: python main.py --headless")
    if env.get("WAYLAND_DISPLAY") and not env.get("DISPLAY"):
        return None  # Qt's Wayland plugin needs none of the xcb libraries
    missing = [package for library, package in XCB_LIBRARIES.items() if find_library(library) is None]
    if missing:
        return (f"a window needs system libraries that are missing: {' '.join(missing)}. Install them with: "
                f"sudo apt-get install -y {' '.join(missing)} (or run python main.py --headless)")
    return None


def port_is_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the node's server binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_for_start(config: NodeConfig) -> tuple[NodeConfig, str]:
    """``config`` with a free port if its fixed one is taken, and a sentence saying so ("" if not).
    The saved setting is not changed: the next start tries the chosen port again."""
    if config.port == 0 or not config.listen or not port_is_taken(config.host, config.port):
        return config, ""
    port = free_port(config.host)
    note = (f"Port {config.port} is used by another program, so the node listens on port {port} for now. "
            "To keep a fixed port, close that program or choose another port in Settings (0 = automatic).")
    return dataclasses.replace(config, port=port), note
