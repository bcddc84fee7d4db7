"""``python main.py ledger verify|balance|history --data-dir D``: the ledger from a terminal.

``main.py`` calls ``add_arguments(parser)`` on its ``ledger`` sub-parser and ``run(args)`` with
the parsed namespace; the exit status is 0 when all is well, 1 when verification fails and 2 for
unusable input (bad address, damaged database), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from app.crypto.keys import is_valid_address
from app.node.config import CONFIG_FILE, load_config_file
from app.node.economics.constants import EconomicsConfig, format_neuro, from_settings
from app.node.economics.ledger import Ledger, LedgerError
from app.node.flags import count_argument
from app.node.schema import ConfigError as SettingsError
from app.wallet.errors import WalletError
from app.wallet.keystore import Keystore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None, help="node data dir (default: the per-user one)")
    parser.add_argument("--devnet", action="store_true", help="use devnet economics (seconds, not days)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = parser.add_subparsers(dest="ledger_command", required=True)
    sub.add_parser("verify", help="re-check every signature and recompute every balance from scratch")
    balance = sub.add_parser("balance", help="available, staked and pending NEURO of an address")
    balance.add_argument("address", nargs="?", help="default: this node's wallet")
    history = sub.add_parser("history", help="latest entries of an address")
    history.add_argument("address", nargs="?", help="default: this node's wallet")
    history.add_argument("--limit", type=count_argument(1), default=20, help="entries to show (default 20)")


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir)
    from app.node.config import default_data_dir

    return default_data_dir()


def load_config(data_dir: Path, devnet: bool = False) -> EconomicsConfig:
    """The ``[economics]`` section of ``config.toml`` in the data dir, over the (devnet) defaults;
    the file is read and checked as the node reads it (SettingsError: one line naming the key)."""
    section = load_config_file(data_dir / CONFIG_FILE).get("economics", {})
    return from_settings(section, devnet=devnet)


def run(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    try:
        config = load_config(data_dir, args.devnet)
        if not (data_dir / "ledger.sqlite").exists():
            raise LedgerError(f"no ledger in {data_dir}; pass --data-dir of a node")
        ledger = Ledger(data_dir, config)
    except (SettingsError, LedgerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.ledger_command == "verify":
            return _verify(ledger, args.json)
        address = args.address or Keystore(data_dir).address
        if not address or not is_valid_address(address):
            print("error: give a valid address (ns1...) or create a wallet in this data dir", file=sys.stderr)
            return 2
        if args.ledger_command == "balance":
            return _balance(ledger, address, args.json)
        return _history(ledger, address, args.limit, args.json)
    except WalletError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        ledger.close()


def _verify(ledger: Ledger, as_json: bool) -> int:
    report = ledger.verify()
    if as_json:
        print(json.dumps({"ok": report.ok, "records": report.records_checked, "bad": report.bad_records,
                          "mismatches": report.balance_mismatches, "conflicts": report.conflicts,
                          "flagged": report.flagged, "state_hash": report.state_hash}))
    else:
        print(report.summary())
        for record_id, reason in report.bad_records:
            print(f"  bad record {record_id}: {reason}")
        for address in report.balance_mismatches:
            print(f"  stored balance differs from recomputed: {address}")
        for address in report.flagged:
            print(f"  account flagged for a double spend: {address}")
        for record_id in report.conflicts:
            print(f"  record voided by a double-spend conflict: {record_id}")
    return 0 if report.ok else 1


def _balance(ledger: Ledger, address: str, as_json: bool) -> int:
    balance = ledger.balance(address)
    if as_json:
        print(json.dumps({"address": address, "available": balance.available, "staked": balance.staked,
                          "pending": balance.pending}))
    else:
        print(f"{address}\n  available {format_neuro(balance.available)}\n"
              f"  staked    {format_neuro(balance.staked)}\n  pending   {format_neuro(balance.pending)}")
    return 0


def _history(ledger: Ledger, address: str, limit: int, as_json: bool) -> int:
    entries = ledger.history(address, limit=limit)
    if as_json:
        print(json.dumps([dataclasses.asdict(e) for e in entries]))
    else:
        for entry in entries:
            print(f"{entry.timestamp_ms}  {entry.kind:<14} {format_neuro(entry.amount):>24}  {entry.detail}")
    return 0
