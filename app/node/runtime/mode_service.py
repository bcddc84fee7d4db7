"""Which contribution modes this node runs: the policy of modes.py fed with live measurements.

The volunteer's switches (SetModes from the app) go through ``apply_toggles`` and so cannot turn on
a mode the machine cannot do; the answer names the reason. ``--modes`` / ``config.toml`` is an
operator's override and is honoured even against the policy (a devnet on a loaded 2-core box
measures T5 yet must run pipelines), with a warning in the log.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable

from app.node.events import Event, ModesChanged
from app.node.hardware import SpeedTier
from app.node.modes import MODES, ModeNotAvailable, ModePlan, NodeCapabilities, apply_toggles, propose_modes

log = logging.getLogger("neuroshard.modes")


class ModeService:
    def __init__(self, *, tier: str, layers_fit: int, fits_full_model: bool, data_dir_free: Callable[[], int],
                 staked_units: Callable[[], int], emit: Callable[[Event], None]) -> None:
        self._tier = SpeedTier(tier)
        self._layers_fit = layers_fit
        self._fits_full_model = fits_full_model
        self._free_disk = data_dir_free
        self._staked = staked_units
        self._emit = emit
        self.active: tuple[str, ...] = ()

    def plan(self) -> ModePlan:
        return propose_modes(NodeCapabilities(self._tier, self._layers_fit, self._fits_full_model,
                                              self._free_disk(), self._staked()))

    def start(self, configured: tuple[str, ...] | None) -> tuple[str, ...]:
        plan = self.plan()
        if configured is None:
            self.active = plan.proposed
        else:
            unknown = [m for m in configured if m not in MODES]
            if unknown:
                raise ModeNotAvailable(f"unknown mode(s): {', '.join(unknown)}")
            for mode in configured:
                if mode not in plan.available:
                    log.warning("mode %s forced by configuration although %s", mode, plan.reason(mode))
            self.active = tuple(m for m in MODES if m in configured)
        self._publish(plan)
        return self.active

    def set(self, modes: tuple[str, ...]) -> tuple[str, ...]:
        """The volunteer's switches; raises ModeNotAvailable with the reason."""
        plan = self.plan()
        self.active = apply_toggles(plan, {m: (m in modes) for m in MODES})
        self._publish(plan)
        return self.active

    def _publish(self, plan: ModePlan) -> None:
        self._emit(ModesChanged(active=self.active, proposed=plan.proposed, unavailable=plan.unavailable))


def free_disk_bytes(path: str) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0
