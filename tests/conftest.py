"""Shared test settings: no display, no network beyond loopback, fast key derivation."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
