"""Full-screen detection on a real X server (Xvfb), with a real X client in another process.

There is no window manager on a bare Xvfb, so the test plays its one EWMH duty that the
detection reads: it publishes the active window in ``_NET_ACTIVE_WINDOW`` on the root. The
client sets its own ``_NET_WM_STATE`` before mapping, as EWMH asks clients to (and as Qt and
SDL do), so the full-screen flag is the app's, not the test's. Skipped where Xvfb is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.node.config import ResourceLimits
from app.ui import fullscreen
from app.ui.activity_guard import blocking_reason, read_conditions

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the X11 path; Linux only")
needs_xvfb = pytest.mark.skipif(not shutil.which("Xvfb") or not ctypes.util.find_library("xcb"),
                                reason="needs Xvfb and libxcb (apt-get install xvfb)")


def _xcb_extras(xcb: fullscreen._Xcb) -> dict[str, object]:
    """The write calls a client (or a window manager) needs; detection itself only reads."""
    lib = ctypes.CDLL(ctypes.util.find_library("xcb"))
    vp, u8, u16, u32, i16 = ctypes.c_void_p, ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_int16
    sigs = {
        "xcb_generate_id": ([vp], u32),
        "xcb_create_window": ([vp, u8, u32, u32, i16, i16, u16, u16, u16, u16, u32, u32, vp], fullscreen._Cookie),
        "xcb_map_window": ([vp, u32], fullscreen._Cookie),
        "xcb_change_property": ([vp, u8, u32, u32, u32, u8, u32, vp], fullscreen._Cookie),
        "xcb_flush": ([vp], ctypes.c_int),
    }
    out = {}
    for name, (args, result) in sigs.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = args, result
        out[name] = function
    return out


def _intern(xcb: fullscreen._Xcb, conn: int, name: bytes) -> int:
    error = ctypes.c_void_p()
    reply = xcb.intern_atom_reply(conn, xcb.intern_atom(conn, 0, len(name), name), ctypes.byref(error))
    atom = int(reply.contents.atom)
    xcb.free(reply)
    return atom


def _set_words(conn: int, window: int, prop: int, kind: int, words: list[int]) -> None:
    xcb = fullscreen._xcb()
    extras = _xcb_extras(xcb)
    data = (ctypes.c_uint32 * max(1, len(words)))(*words)
    extras["xcb_change_property"](conn, 0, window, prop, kind, 32, len(words), data)  # 0: replace
    _sync(conn)


def _sync(conn: int) -> None:
    """A round trip: the server has handled every request this client sent before it. A flush alone
    is not enough, since the server may read another client's requests (the detector's) first."""
    _intern(fullscreen._xcb(), conn, b"WM_NAME")


def client(display: str, full: bool) -> None:
    """A small X11 app in its own process: one window, full screen or not; prints its id, then waits."""
    xcb = fullscreen._xcb()
    extras = _xcb_extras(xcb)
    screen = ctypes.c_int(0)
    conn = xcb.connect(display.encode(), ctypes.byref(screen))
    root = fullscreen._root_window(xcb, conn, screen.value)
    window = extras["xcb_generate_id"](conn)
    extras["xcb_create_window"](conn, 0, window, root, 0, 0, 320, 200, 0, 1, 0, 0, None)
    if full:
        state = _intern(xcb, conn, b"_NET_WM_STATE")
        _set_words(conn, window, state, fullscreen._XA_ATOM, [_intern(xcb, conn, b"_NET_WM_STATE_FULLSCREEN")])
    extras["xcb_map_window"](conn, window)
    _sync(conn)
    print(window, flush=True)
    sys.stdin.read()  # live until the test closes our stdin


@pytest.fixture
def display() -> Iterator[str]:
    """A private Xvfb display; -displayfd lets the server pick a free number (no races with others)."""
    read_end, write_end = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                              pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as pipe:
            number = pipe.readline().strip()
        if not number:
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def start_client(display: str, full: bool) -> tuple[subprocess.Popen[str], int]:
    code = f"import tests.ui.test_fullscreen as t; t.client({display!r}, {full!r})"
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def publish_active(display: str, window: int) -> None:
    """What a window manager does when focus moves: _NET_ACTIVE_WINDOW on the root."""
    xcb = fullscreen._xcb()
    screen = ctypes.c_int(0)
    conn = xcb.connect(display.encode(), ctypes.byref(screen))
    try:
        root = fullscreen._root_window(xcb, conn, screen.value)
        _set_words(conn, root, _intern(xcb, conn, b"_NET_ACTIVE_WINDOW"), fullscreen._XA_WINDOW, [window])
    finally:
        xcb.disconnect(conn)


def stop(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=10)


@needs_xvfb
def test_x11_reads_the_active_windows_full_screen_state(display: str) -> None:
    # No window manager has said anything yet: the platform cannot tell, which must not pause.
    assert fullscreen.fullscreen_app_running(display) is None
    windowed, windowed_id = start_client(display, full=False)
    game, game_id = start_client(display, full=True)
    try:
        publish_active(display, 0)
        assert fullscreen.fullscreen_app_running(display) is False  # nothing focused
        publish_active(display, windowed_id)
        assert fullscreen.fullscreen_app_running(display) is False
        publish_active(display, game_id)
        assert fullscreen.fullscreen_app_running(display) is True
        # What the guard makes of it, read the way it reads (only the display is chosen here).
        limits = ResourceLimits(pause_on_battery=False, pause_when_fullscreen=True)
        reading = read_conditions(limits, idle=lambda: 600.0,
                                  fullscreen=lambda: fullscreen.fullscreen_app_running(display))
        assert blocking_reason(limits, reading) == "a full-screen app is running"
        publish_active(display, windowed_id)  # the volunteer alt-tabs out of the game
        assert fullscreen.fullscreen_app_running(display) is False
        publish_active(display, game_id)
        stop(game)
        deadline = time.monotonic() + 30  # the server notices the closed client; the id goes stale
        while fullscreen.fullscreen_app_running(display) is not False and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fullscreen.fullscreen_app_running(display) is False  # a vanished window: no error, no pause
    finally:
        for process in (windowed, game):
            if process.poll() is None:
                stop(process)


def test_no_display_is_unknown_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    assert fullscreen.fullscreen_app_running() is None
    assert fullscreen.fullscreen_app_running(":4242") is None  # no server there
    assert fullscreen.support().available is False


@needs_xvfb
def test_input_idleness_is_read_from_the_same_x_server(display: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """idle.py (which picks the in-use or idle caps) answers on a real server: nobody typed on a
    fresh Xvfb, so the idle time is a number, not None (MIT-SCREEN-SAVER is built into Xvfb)."""
    from app.ui.idle import idle_seconds

    if not ctypes.util.find_library("Xss"):
        pytest.skip("libXss is not installed")
    monkeypatch.setenv("DISPLAY", display)
    first = idle_seconds()
    assert first is not None and first >= 0
    monkeypatch.setenv("DISPLAY", ":4242")  # no server: unknown, not an error
    assert idle_seconds() is None


def test_wayland_idleness_comes_from_the_compositor_not_xwayland(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under Wayland, XWayland's counter would miss typing in Wayland apps; GNOME's answer is read,
    and anything else is unknown (the guard then treats the volunteer as present)."""
    from app.ui import idle

    assert idle.mutter_idle_seconds("(uint64 12345,)\n") == 12.345
    assert idle.mutter_idle_seconds("Error: GDBus.Error:org.freedesktop.DBus.Error.ServiceUnknown") is None
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    monkeypatch.setattr(idle, "_MUTTER_IDLE", ["gdbus-that-is-not-installed-here"])
    assert idle.idle_seconds() is None
