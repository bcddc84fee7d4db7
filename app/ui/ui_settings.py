"""Settings that belong to the window, not the node: geometry, theme, tray behaviour.

Node settings live in ``config.toml`` (app/node/config.py) so the headless node shares them; these
live in a QSettings INI file next to it, in the data dir, so one data dir is one whole profile
(and tests stay hermetic: nothing is written to the user's real settings).

The one setting that cannot live in the data dir is where the data dir is: after the volunteer
moves it from Settings, ``location.json`` in the per-user config folder names the new folder
(app/node/config.py ``start_data_dir``, read at start by the app and the headless node alike).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

UI_SETTINGS_FILE = "ui.ini"
THEMES = ("system", "light", "dark")


class UiSettings:
    def __init__(self, data_dir: Path) -> None:
        self._settings = QSettings(str(data_dir / UI_SETTINGS_FILE), QSettings.Format.IniFormat)

    def _get(self, key: str, default: Any, kind: type) -> Any:
        value = self._settings.value(key, default)
        if kind is bool and isinstance(value, str):  # INI stores booleans as text
            return value.lower() in ("true", "1", "yes")
        try:
            return kind(value)
        except (TypeError, ValueError):
            return default

    def sync(self) -> None:
        self._settings.sync()

    @property
    def geometry(self) -> QByteArray | None:
        value = self._settings.value("window/geometry")
        return value if isinstance(value, QByteArray) else None

    @geometry.setter
    def geometry(self, value: QByteArray) -> None:
        self._settings.setValue("window/geometry", value)

    @property
    def theme(self) -> str:
        value = self._get("ui/theme", "system", str)
        return value if value in THEMES else "system"

    @theme.setter
    def theme(self, value: str) -> None:
        self._settings.setValue("ui/theme", value if value in THEMES else "system")

    @property
    def close_to_tray(self) -> bool:
        return self._get("ui/close_to_tray", True, bool)

    @close_to_tray.setter
    def close_to_tray(self, value: bool) -> None:
        self._settings.setValue("ui/close_to_tray", bool(value))

    @property
    def start_at_login(self) -> bool:
        return self._get("ui/start_at_login", False, bool)

    @start_at_login.setter
    def start_at_login(self, value: bool) -> None:
        self._settings.setValue("ui/start_at_login", bool(value))

    @property
    def notify_rewards(self) -> bool:
        return self._get("ui/notify_rewards", True, bool)

    @notify_rewards.setter
    def notify_rewards(self, value: bool) -> None:
        self._settings.setValue("ui/notify_rewards", bool(value))

    @property
    def wallet_lock_minutes(self) -> int:
        return max(1, self._get("wallet/lock_minutes", 5, int))

    @wallet_lock_minutes.setter
    def wallet_lock_minutes(self, value: int) -> None:
        self._settings.setValue("wallet/lock_minutes", max(1, int(value)))

    @property
    def last_page(self) -> int:
        return self._get("window/page", 0, int)

    @last_page.setter
    def last_page(self, value: int) -> None:
        self._settings.setValue("window/page", int(value))
