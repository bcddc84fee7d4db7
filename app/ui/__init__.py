"""The volunteer's desktop app (PySide6 Widgets).

It talks to the node only through ``NodeEngine`` commands and events (see ``bridge.py``); it never
imports torch or grpc, and long work runs off the GUI thread (``tasks.py``).
"""
