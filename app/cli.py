"""Command line: the GUI by default, ``--headless``, ``--self-test`` and the sub-commands.

Sub-commands are dispatched before argparse builds the node's own parser so ``--help`` stays fast:
each lives in the package it belongs to and exposes ``add_arguments(parser)`` and ``run(args)``.
Every bad input ends with one line on stderr and exit code 2, never a traceback: a flag (a
number out of range included), a setting in config.toml, a wrong wallet password (checked
before the hardware benchmark). Exit code 1 is a failure that is not the input's fault.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from app.node.config import (
    ALL_MODES,
    ConfigError,
    NodeConfig,
    apply_file_settings,
    default_data_dir,
    ensure_data_dir,
    load_config_file,
    start_data_dir,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PROG = "neuroshard"

# name -> (module, one-line help). Modules are imported only when their sub-command runs.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "tracker": ("app.node.p2p.cli", "run a bootstrap tracker"),
    "devnet": ("app.node.devnet", "train on a local network of N node processes"),
    "arch": ("app.node.model.cli", "print the architecture the scaler picks for a network"),
    "ledger": ("app.wallet.ledger_cli", "inspect and verify the NEURO ledger"),
    "migrate": ("app.node.migration_cli", "review or run a waiting architecture upgrade on a stopped node"),
    "generate": ("app.node.generate_cli", "generate text with the network's model (or the local checkpoint)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (exit 2) instead of usage plus error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    epilog = "sub-commands (each has --help):\n" + "\n".join(
        f"  {name:<9} {text}" for name, (_, text) in SUBCOMMANDS.items()
    )
    parser = _Parser(
        prog=PROG,
        description="NeuroShard Node: lend this machine to the network that trains one open language model.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--headless", action="store_true", help="run the node without a window (Qt is not imported)")
    how.add_argument("--self-test", action="store_true",
                     help="check every dependency, print versions, device and speed tier as JSON, exit")
    parser.add_argument("--json-events", action="store_true", help="headless: print every event as one JSON line")
    parser.add_argument("--data-dir", type=Path, help=f"where wallet, ledger, checkpoints live (default {default_data_dir()})")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port for peers (gRPC); 0 picks a free one (default 7450)")
    parser.add_argument("--tracker", action="append", metavar="HOST:PORT", help="bootstrap tracker (repeatable)")
    parser.add_argument("--no-listen", action="store_true", help="accept no inbound connections; reach peers via a relay")
    parser.add_argument("--max-steps", type=int, metavar="N", help="stop after N training steps (0: start, then stop)")
    parser.add_argument("--modes", metavar="LIST", help=f"comma list of contribution modes from {','.join(ALL_MODES)}")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="compute device (default auto)")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log verbosity")
    parser.add_argument("--seed", type=int, help="random seed (reproducible runs)")
    parser.add_argument("--on-corrupt-checkpoint", choices=("ask", "restart", "stop"),
                        help="when both checkpoint copies are corrupt and no replica has the stage: ask (the app's "
                             "default), restart the stage from scratch, or stop with exit code 3 (headless default)")
    return parser


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """Defaults < config.toml in the data dir < flags."""
    data_dir = start_data_dir(args.data_dir).expanduser()
    config = NodeConfig(data_dir=data_dir)
    config = apply_file_settings(config, load_config_file(config.config_path))  # names the file
    overrides = {
        "host": args.host, "port": args.port, "max_steps": args.max_steps, "device": args.device,
        "log_level": args.log_level, "seed": args.seed, "on_corrupt_checkpoint": args.on_corrupt_checkpoint,
        "trackers": tuple(args.tracker) if args.tracker else None,
        "modes": tuple(m.strip() for m in args.modes.split(",") if m.strip()) if args.modes else None,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    config = dataclasses.replace(
        config,
        listen=config.listen and not args.no_listen,
        json_events=args.json_events,
        headless=args.headless,
    )
    config.validate(name=_flag)  # the file was checked above: what is wrong now came from a flag
    return config


_FLAGS = {"trackers": "--tracker", "listen": "--no-listen"}


def _flag(key: str) -> str:
    """``max_steps`` -> ``--max-steps``, ``trackers[1]`` -> ``--tracker``: the flag that set it."""
    base = key.split("[", 1)[0]
    return _FLAGS.get(base, "--" + base.replace("_", "-"))


def check_port_free(host: str, port: int) -> None:
    """Fail early with a clear message when the peer port is taken (port 0 is always fine)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise ConfigError(
                    f"port {port} on {host} is in use (or not allowed); pick another with --port, or --port 0"
                ) from exc
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _unlock_wallet(config: NodeConfig) -> int:
    """Headless: unlock the wallet before anything slow. A wrong or missing password is bad input
    (exit 2); a damaged wallet is a failure (exit 1). The window asks for the password itself."""
    from app.node.identity import IdentityError, unlock_before_start
    from app.wallet.errors import WalletError

    try:
        unlock_before_start(config)
    except IdentityError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WalletError as exc:
        print(f"{PROG}: error: the wallet cannot be opened: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def _run_subcommand(name: str, argv: Sequence[str]) -> int:
    module_name, text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = _Parser(prog=f"{PROG} {name}", description=text)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(list(argv))) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return _run_subcommand(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        if args.self_test:
            from app.selftest import run_self_test

            return run_self_test()
        config = config_from_args(args)
        ensure_data_dir(config.data_dir)
        headless = config.headless or not has_display()
        if config.listen and headless:  # the window falls back to a free port itself, and says so
            check_port_free(config.host, config.port)
        if headless:
            if not config.headless:
                print(f"{PROG}: no display found; running headless (use --headless to say so)", file=sys.stderr)
                config = dataclasses.replace(config, headless=True)
            code = _unlock_wallet(config)  # before the benchmark: a wrong password is said at once
            if code != EXIT_OK:
                return code
            from app.node.headless import run_headless

            return run_headless(config)
        from app.ui.app import run_gui

        return run_gui(config)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
