"""What the wizard's pages share while the volunteer goes through them."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.node.config import NodeConfig
from app.node.events import HardwareMeasured
from app.node.values import ModePlan
from app.wallet.keystore import Keystore


class PageId(enum.IntEnum):
    WELCOME = 0
    WALLET = 1
    PHRASE = 2
    CONFIRM = 3
    HARDWARE = 4
    MODES = 5
    LIMITS = 6
    REACH = 7
    JOIN = 8


MIN_PASSWORD_LENGTH = 8  # the keystore file is only as strong as this password (scrypt slows guessing)


@dataclass
class WizardState:
    config: NodeConfig
    keystore_factory: Callable[[Path], Keystore] = Keystore
    address: str = ""
    password: str = field(default="", repr=False)
    phrase: str = field(default="", repr=False)  # only between creation and confirmation
    created: bool = False
    unprotected: bool = False  # the wallet was sealed without a password (no keyring; chosen)
    hardware: HardwareMeasured | None = None
    plan: ModePlan | None = None
    modes: tuple[str, ...] = ()

    def keystore(self) -> Keystore:
        return self.keystore_factory(self.config.data_dir)

    def forget_secrets(self) -> None:
        self.password = ""
        self.phrase = ""
