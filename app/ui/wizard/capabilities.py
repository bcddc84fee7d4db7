"""What the wizard proposes from a hardware measurement, before the node has an assignment.

The node decides for real once it runs (modes.propose_modes with the live architecture); the
wizard estimates from the genesis model so the volunteer sees sensible choices at once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from app.node.events import HardwareMeasured
from app.node.hardware import SpeedTier
from app.node.model.architecture import ANCHOR_HIDDEN, ANCHOR_LAYERS, BYTES_PER_TRAINED_PARAM
from app.node.modes import ModePlan, NodeCapabilities, propose_modes

# A pre-norm block holds about 12·hidden² parameters (attention 4h², SwiGLU FFN ~8h²).
GENESIS_LAYER_BYTES = 12 * ANCHOR_HIDDEN**2 * BYTES_PER_TRAINED_PARAM


def free_disk_bytes(path: Path) -> int:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return 0


def capabilities(hw: HardwareMeasured, memory_fraction: float, data_dir: Path,
                 staked_units: int = 0) -> NodeCapabilities:
    budget = int(hw.memory_bytes * memory_fraction)
    layers_fit = budget // GENESIS_LAYER_BYTES
    return NodeCapabilities(
        tier=SpeedTier(hw.tier), layers_fit=int(layers_fit), fits_full_model=layers_fit >= ANCHOR_LAYERS,
        free_disk_bytes=free_disk_bytes(data_dir), staked_units=staked_units,
    )


def wizard_plan(hw: HardwareMeasured, memory_fraction: float, data_dir: Path) -> ModePlan:
    return propose_modes(capabilities(hw, memory_fraction, data_dir))
