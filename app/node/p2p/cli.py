"""``main.py tracker``: run a bootstrap tracker until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from app.node.flags import port_argument, seconds_argument
from app.node.p2p.config import P2PConfig
from app.node.p2p.tracker import Tracker

DEFAULT_PORT = 7600


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=port_argument, default=DEFAULT_PORT,
                        help=f"TCP port, 0-65535 (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--host", default="0.0.0.0", help="interface to listen on (default all)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keeps the tracker's key and TLS certificate, so its pinned address "
                             "(<id>@host:port, printed at start) survives restarts; default: new each start")
    parser.add_argument("--heartbeat-timeout", type=seconds_argument, default=None,
                        help="seconds without a heartbeat before a node is dropped (default 120)")


async def _serve(args: argparse.Namespace) -> None:
    config = P2PConfig()
    if args.heartbeat_timeout:
        config = P2PConfig(heartbeat_timeout_s=args.heartbeat_timeout,
                           heartbeat_interval_s=min(config.heartbeat_interval_s, args.heartbeat_timeout / 4))
    tracker = Tracker(args.port, args.host, config, data_dir=args.data_dir)
    await tracker.start()
    print(f"tracker listening on {tracker.address} (pinned: {tracker.pinned_address})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await tracker.stop()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"tracker could not start: {exc}. Is port {args.port} already in use?", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuroshard tracker", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
