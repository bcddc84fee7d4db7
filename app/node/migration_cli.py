"""``main.py migrate``: review (``--dry-run``) or run (``--apply``) a waiting architecture upgrade.

The node must be stopped: the command takes the data dir's lock (datadir_lock.py) like a node.
``--dry-run`` prints the plan as JSON; ``--apply`` prints one progress line per phase on stderr
and the result as JSON. The ledger is kept unless ``--reset-ledger`` (it is moved into the
backup, never deleted: earnings recorded there stay provable from that copy).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.node.datadir_lock import DataDirBusy, DataDirLock
from app.node.migration import MigrationError, apply, dry_run, recover

EXIT_OK, EXIT_FAILURE = 0, 1
RESET_WARNING = ("--reset-ledger: this node's ledger (its record of earned NEURO) is moved to the backup "
                 "folder and the node starts a new one; the network's copies are unaffected")


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, required=True, help="the node's data dir")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--dry-run", action="store_true", help="print the plan as JSON and change nothing")
    action.add_argument("--apply", action="store_true", help="back up, grow this node's layers, adopt the upgrade")
    parser.add_argument("--reset-ledger", action="store_true",
                        help="also start a new ledger (the old one is kept in the backup); not recommended")
    parser.add_argument("--distill-steps", type=_non_negative_int, default=0,
                        help="train the grown model against the old one for N steps (whole-model nodes only)")
    parser.add_argument("--fresh", action="store_true",
                        help="reset instead of growing: adopt the new version with fresh weights "
                             "(what was learned stays only in the backup); not recommended")
    parser.add_argument("--memory-gb", type=float, default=0.0,
                        help="the node's memory budget in GiB, to say whether its layers still fit "
                             "(default: not checked)")


def run(args: argparse.Namespace) -> int:
    lock = DataDirLock(args.data_dir)
    try:
        lock.acquire(same_process_wait_s=0.0)
    except DataDirBusy as exc:
        print(f"migrate: {exc}; stop the node first", file=sys.stderr)
        return EXIT_FAILURE
    try:
        restored = recover(args.data_dir)
        if restored:
            print(f"migrate: {restored}", file=sys.stderr)
        budget = int(args.memory_gb * 1024**3)
        if args.dry_run:
            print(json.dumps(dry_run(args.data_dir, memory_budget_bytes=budget).to_dict(), indent=2))
            return EXIT_OK
        if args.reset_ledger:
            print(f"migrate: warning: {RESET_WARNING}", file=sys.stderr)
        if args.fresh:
            print("migrate: warning: --fresh: the grown model is not kept; this node's layers start again "
                  "from the genesis weights (the trained ones stay in the backup)", file=sys.stderr)
        result = apply(args.data_dir, memory_budget_bytes=budget, reset_ledger=args.reset_ledger,
                       distill_steps=args.distill_steps, fresh=args.fresh,
                       progress=lambda phase, fraction, message: print(
                           f"migrate: [{fraction:4.0%}] {phase}: {message}", file=sys.stderr, flush=True))
    except MigrationError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        lock.release()
    print(json.dumps(result.to_dict(), indent=2))
    return EXIT_OK
