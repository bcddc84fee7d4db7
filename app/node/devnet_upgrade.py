"""A devnet's live architecture upgrade: ``main.py devnet ... --upgrade-at STEP`` (issue 16 item 7).

Every node of the devnet gets ``training.upgrade_at_step = STEP``, the devnet's growth cap and
``[migration] automatic = true``. A driver that committed STEP recalculates the architecture over
the registry's offers and publishes the signed upgrade (runtime/upgrade_service.py); every node
hears it, stops, migrates the layers it holds by function-preserving growth (migration.py: backup,
growth, adoption), starts again on the new version and fetches its layers' latest weights from a
replica already there; meanwhile old-version nodes train among themselves and cross-version
requests are refused retryably (arch_guard.py, p2p_transport.py). Nothing here drives the nodes:
this module only configures them and reads their data dirs afterwards.

``upgrade_report`` is the summary's ``upgrade`` section, from what the nodes left on disk:

* the architecture (version, shape, parameters) before and after, and which nodes migrated;
* ``held_out_loss_before``: the whole model assembled from one backup checkpoint per stage (the
  weights each node had when it stopped to migrate), on the fixed held-out batch;
* ``held_out_loss_after``: the same stages grown by the same deterministic growth, and checked to
  be exactly what each node adopted (``grown_digest`` in its migration record);
* ``held_out_loss_end``: the whole model from the nodes' final checkpoints, after training went on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w
import tomllib

DEVNET_GROWTH_CAP = 1.5
"""One devnet upgrade at most multiplies the parameters by 1.5 (training.max_upgrade_factor): the
tiny 4 × 64 model grows to 6 × 64 by two identity blocks (1.44×, above seed 000's 1.3×) instead of
the hundreds of times larger shape the machines' memory affords."""


def upgrade_training(step: int) -> dict[str, Any]:
    """The ``[training]`` keys that make the nodes force the recalculation at ``step``."""
    return {"upgrade_at_step": step, "max_upgrade_factor": DEVNET_GROWTH_CAP}


def enable_automatic_migration(data_dir: Path) -> None:
    """``[migration] automatic = true`` in the node's config.toml: it migrates without anyone asking."""
    path = Path(data_dir) / "config.toml"
    config = tomllib.loads(path.read_text())
    config["migration"] = {**config.get("migration", {}), "automatic": True}
    path.write_bytes(tomli_w.dumps(config).encode())


def upgrade_report(dirs: list[Path]) -> dict[str, Any]:
    """The summary's ``upgrade`` section (module docstring); never raises: a problem is reported."""
    try:
        return _report(dirs)
    except Exception as exc:  # a summary must not fail on one unreadable data dir
        return {"error": f"{type(exc).__name__}: {exc}"}


def _report(dirs: list[Path]) -> dict[str, Any]:
    from app.node.migration import ADOPTED_FILE, MIGRATION_DIR, read_result
    from app.node.training.upgrade import parse_upgrade

    adopted: dict[str, Any] = {}
    for d in dirs:
        path = d / MIGRATION_DIR / ADOPTED_FILE
        if path.exists():
            adopted[d.name] = parse_upgrade(path.read_bytes())
    if not adopted:
        return {"triggered": False, "migrated": [], "all_migrated": False}
    record = next(iter(adopted.values()))
    plan = record.plan
    migrated = sorted(name for name, r in adopted.items() if r.plan == plan)
    results = {d.name: read_result(d, plan.target.version) for d in dirs}
    out: dict[str, Any] = {
        "triggered": True, "decided_at_nodes": record.nodes,
        "version_before": plan.source.version, "version_after": plan.target.version,
        "shape_before": [plan.source.layers, plan.source.hidden], "shape_after": [plan.target.layers, plan.target.hidden],
        "parameters_before": plan.source.param_count(), "parameters_after": plan.target.param_count(),
        "growth": plan.to_dict(), "migrated": migrated, "all_migrated": len(migrated) == len(dirs),
    }
    out.update(_losses(dirs, plan, results))
    return out


def _losses(dirs: list[Path], plan: Any, results: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    from app.node.migration import MIGRATION_DIR, grow_training_state, held_out_loss, model_digest
    from app.node.model.checkpoint import load_checkpoint
    from app.node.training.checkpointing import read_resume_point

    before: dict[tuple[int, int], tuple[str, Any]] = {}  # one backup per stage: (node, resume point)
    end: dict[tuple[int, int], Any] = {}
    for d in sorted(dirs):
        backup = read_resume_point(d / MIGRATION_DIR / f"backup-v{plan.source.version}")
        if backup is not None:
            before.setdefault(tuple(backup.layer_range), (d.name, backup))
        final = read_resume_point(d)
        if final is not None and final.arch.version == plan.target.version:
            # the most trained holder of each stage (an idle replica's checkpoint lags its live weights)
            held = end.get(tuple(final.layer_range))
            if held is None or int(final.counters["inner_step"]) > int(held.counters["inner_step"]):
                end[tuple(final.layer_range)] = final
    old_state: dict[str, Any] = {}
    grown_state: dict[str, Any] = {}
    adopted_exactly = True
    for layer_range, (name, point) in sorted(before.items()):
        state = load_checkpoint(point.path).state
        old_state.update({k: v for k, v in state.items() if k.startswith("model.")})
        grown = grow_training_state(state, plan, layer_range, with_embedding=point.with_embedding,
                                    with_head=point.with_head)
        grown_state.update({k: v for k, v in grown.items() if k.startswith("model.")})
        adopted_exactly &= (results.get(name) or {}).get("grown_digest") == model_digest(grown)
    out: dict[str, Any] = {"stages_before": [list(r) for r in sorted(before)], "stages_after": [list(r) for r in sorted(end)],
                           "grown_weights_are_what_nodes_adopted": adopted_exactly and bool(before)}
    data_dir = sorted(dirs)[0]
    if _tiles(before, plan.source.layers):
        out["held_out_loss_before"] = held_out_loss(plan.source, old_state, data_dir)
        out["held_out_loss_after"] = held_out_loss(plan.target, grown_state, data_dir)
    if _tiles(end, plan.target.layers):
        final_state: dict[str, Any] = {}
        for point in end.values():
            state = load_checkpoint(point.path).state
            final_state.update({k: v for k, v in state.items() if k.startswith("model.")})
        out["held_out_loss_end"] = held_out_loss(plan.target, final_state, data_dir)
    return out


def _tiles(stages: dict[tuple[int, int], Any], layers: int) -> bool:
    """The stages cover layers 0..layers exactly once, end to end."""
    bounds = sorted(stages)
    return bool(bounds) and bounds[0][0] == 0 and bounds[-1][1] == layers and all(
        b[0] == a[1] for a, b in zip(bounds, bounds[1:], strict=False))
