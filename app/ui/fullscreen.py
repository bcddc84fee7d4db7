"""Is a full-screen app (a game, a film, a presentation) in front of the volunteer? Per platform.

``fullscreen_app_running()`` answers True, False, or None for "cannot tell here". The activity
guard calls it off the GUI thread (it opens a display connection or asks the shell) and pauses
the node only on True: an unknown answer never pauses, or the node would never run at all on a
platform we cannot read, and the settings form greys the option there instead (``support()``).

- Windows: ``SHQueryUserNotificationState`` (shell32), the call Windows itself uses to hold back
  notifications: "busy" (a full-screen app), "D3D full screen" (an exclusive-mode game) and
  "presentation mode" count as full screen.
- Linux/BSD X11 (and X11 apps under XWayland): the window manager's active window
  (``_NET_ACTIVE_WINDOW`` on the root) has ``_NET_WM_STATE_FULLSCREEN`` in its
  ``_NET_WM_STATE`` (EWMH). Read through libxcb rather than libX11: an X error (the active
  window closed between the two reads) comes back as a value in xcb, whereas Xlib would call
  the process-wide error handler, whose default exits the program, and replacing that handler
  from a worker thread would race with Qt's own use of Xlib.
- macOS: not read. The public way (CGWindowListCopyWindowInfo and comparing window bounds with
  the display) needs CoreFoundation dictionaries walked through ctypes, which we cannot test
  here; a wrong ctypes signature there would crash the app rather than raise. None is returned
  and the form says the option is not available on this Mac.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass

# Windows QUERY_USER_NOTIFICATION_STATE values that mean "something owns the screen".
_QUNS_BUSY, _QUNS_RUNNING_D3D_FULL_SCREEN, _QUNS_PRESENTATION_MODE = 2, 3, 4
# Predefined X atoms (X11/Xatom.h).
_XA_ATOM, _XA_WINDOW = 4, 33


@dataclass(frozen=True)
class Support:
    """Whether this platform can tell (for the settings form), and what the volunteer should know."""

    available: bool
    note: str


def support() -> Support:
    """Cheap: looks at the platform, the libraries and the environment; opens no connection."""
    if sys.platform == "win32":
        return Support(True, "Detected through Windows' own full-screen and presentation state.")
    if sys.platform == "darwin":
        return Support(False, "Not available on macOS yet: the node cannot tell when an app is full screen.")
    if not ctypes.util.find_library("xcb"):
        return Support(False, "Not available: the X11 library (libxcb) is not installed.")
    if not os.environ.get("DISPLAY"):
        return Support(False, "Not available: no X11 display (a Wayland-only or headless session).")
    if os.environ.get("WAYLAND_DISPLAY"):
        return Support(True, "On Wayland only full-screen X11 apps (most games) are seen; native "
                             "Wayland apps are not.")
    return Support(True, "Detected through the window manager's full-screen state (EWMH).")


def fullscreen_app_running(display: str | None = None) -> bool | None:
    """True when a full-screen app is in front, False when not, None when this platform cannot tell.

    ``display`` names an X11 display (":1"); None means $DISPLAY. Never raises for an
    unreadable platform: that is None.
    """
    try:
        if sys.platform == "win32":
            return _windows()
        if sys.platform == "darwin":
            return None
        return _x11(display)
    except (OSError, AttributeError, ValueError):
        return None


def _windows() -> bool | None:  # pragma: no cover - Windows only
    state = ctypes.c_int(0)
    result = ctypes.windll.shell32.SHQueryUserNotificationState(ctypes.byref(state))  # type: ignore[attr-defined]
    if result != 0:  # an HRESULT failure: say we cannot tell
        return None
    return state.value in (_QUNS_BUSY, _QUNS_RUNNING_D3D_FULL_SCREEN, _QUNS_PRESENTATION_MODE)


# --- X11 through libxcb ------------------------------------------------------------------------


class _ScreenIterator(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("rem", ctypes.c_int), ("index", ctypes.c_int)]


class _Cookie(ctypes.Structure):
    _fields_ = [("sequence", ctypes.c_uint)]


class _InternAtomReply(ctypes.Structure):
    _fields_ = [("response_type", ctypes.c_uint8), ("pad0", ctypes.c_uint8), ("sequence", ctypes.c_uint16),
                ("length", ctypes.c_uint32), ("atom", ctypes.c_uint32)]


class _GetPropertyReply(ctypes.Structure):
    _fields_ = [("response_type", ctypes.c_uint8), ("format", ctypes.c_uint8), ("sequence", ctypes.c_uint16),
                ("length", ctypes.c_uint32), ("type", ctypes.c_uint32), ("bytes_after", ctypes.c_uint32),
                ("value_len", ctypes.c_uint32), ("pad0", ctypes.c_uint8 * 12)]


class _Xcb:
    """The few libxcb calls we need, with their C signatures declared (ctypes defaults to int)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("xcb")
        if not name:
            raise OSError("libxcb not found")
        lib = ctypes.CDLL(name)
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        self.free = libc.free
        self.free.argtypes, self.free.restype = [ctypes.c_void_p], None
        vp, err_out = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
        self.connect = _declare(lib.xcb_connect, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)], vp)
        self.has_error = _declare(lib.xcb_connection_has_error, [vp], ctypes.c_int)
        self.disconnect = _declare(lib.xcb_disconnect, [vp], None)
        self.get_setup = _declare(lib.xcb_get_setup, [vp], vp)
        self.roots = _declare(lib.xcb_setup_roots_iterator, [vp], _ScreenIterator)
        self.screen_next = _declare(lib.xcb_screen_next, [ctypes.POINTER(_ScreenIterator)], None)
        self.intern_atom = _declare(lib.xcb_intern_atom, [vp, ctypes.c_uint8, ctypes.c_uint16, ctypes.c_char_p],
                                    _Cookie)
        self.intern_atom_reply = _declare(lib.xcb_intern_atom_reply, [vp, _Cookie, err_out],
                                          ctypes.POINTER(_InternAtomReply))
        self.get_property = _declare(lib.xcb_get_property, [vp, ctypes.c_uint8, ctypes.c_uint32, ctypes.c_uint32,
                                                            ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32],
                                     _Cookie)
        self.get_property_reply = _declare(lib.xcb_get_property_reply, [vp, _Cookie, err_out],
                                           ctypes.POINTER(_GetPropertyReply))
        self.property_value = _declare(lib.xcb_get_property_value, [ctypes.POINTER(_GetPropertyReply)], vp)
        self.property_value_length = _declare(lib.xcb_get_property_value_length,
                                              [ctypes.POINTER(_GetPropertyReply)], ctypes.c_int)


def _declare(function, argtypes: list, restype):  # noqa: ANN001, ANN202 (a ctypes function pointer)
    function.argtypes, function.restype = argtypes, restype
    return function


_XCB: _Xcb | None = None


def _xcb() -> _Xcb:
    global _XCB
    if _XCB is None:
        _XCB = _Xcb()
    return _XCB


def _x11(display: str | None) -> bool | None:
    if display is None and not os.environ.get("DISPLAY"):
        return None
    xcb = _xcb()
    screen_number = ctypes.c_int(0)
    conn = xcb.connect(display.encode() if display else None, ctypes.byref(screen_number))
    if not conn:
        return None
    try:
        if xcb.has_error(conn):
            return None
        root = _root_window(xcb, conn, screen_number.value)
        active_atom = _atom(xcb, conn, b"_NET_ACTIVE_WINDOW")
        state_atom = _atom(xcb, conn, b"_NET_WM_STATE")
        fullscreen_atom = _atom(xcb, conn, b"_NET_WM_STATE_FULLSCREEN")
        if not active_atom:  # no EWMH window manager ever ran on this display: cannot tell
            return None
        active = _property_words(xcb, conn, root, active_atom, _XA_WINDOW, 1)
        if active is None:  # the window manager does not publish the active window
            return None
        if not active or not active[0] or not state_atom or not fullscreen_atom:
            return False  # nothing is active, or no window ever asked for full screen
        states = _property_words(xcb, conn, active[0], state_atom, _XA_ATOM, 64)
        return fullscreen_atom in (states or [])  # a vanished window reads as None: not full screen
    finally:
        xcb.disconnect(conn)


def _root_window(xcb: _Xcb, conn: int, screen_number: int) -> int:
    iterator = xcb.roots(xcb.get_setup(conn))
    for _ in range(screen_number):
        if iterator.rem <= 1:
            break
        xcb.screen_next(ctypes.byref(iterator))
    if not iterator.data:
        raise OSError("the X server reported no screen")
    return ctypes.cast(iterator.data, ctypes.POINTER(ctypes.c_uint32))[0]  # xcb_screen_t starts with root


def _atom(xcb: _Xcb, conn: int, name: bytes) -> int:
    """The atom for ``name``, or 0 when no client ever created it (only_if_exists: we add none)."""
    error = ctypes.c_void_p()
    reply = xcb.intern_atom_reply(conn, xcb.intern_atom(conn, 1, len(name), name), ctypes.byref(error))
    if error.value:
        xcb.free(error)
    if not reply:
        raise OSError(f"the X server did not answer for {name.decode()}")
    try:
        return int(reply.contents.atom)
    finally:
        xcb.free(reply)


def _property_words(xcb: _Xcb, conn: int, window: int, prop: int, kind: int, count: int) -> list[int] | None:
    """A 32-bit list property of ``window``; None when it is unset or the window is gone."""
    error = ctypes.c_void_p()
    reply = xcb.get_property_reply(conn, xcb.get_property(conn, 0, window, prop, kind, 0, count),
                                   ctypes.byref(error))
    if error.value:
        xcb.free(error)
    if not reply:
        return None
    try:
        if reply.contents.type == 0 or reply.contents.format != 32:  # unset (or not a list of words)
            return None
        length = xcb.property_value_length(reply) // 4
        words = ctypes.cast(xcb.property_value(reply), ctypes.POINTER(ctypes.c_uint32))
        return [int(words[i]) for i in range(length)]
    finally:
        xcb.free(reply)
