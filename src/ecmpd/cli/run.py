"""`ecmpd run`: the daemon (apply, then keep the kernel in step with uplink health)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from ecmpd.cli.common import EXIT_CONFIG, EXIT_OK, CommandError
from ecmpd.daemon import Daemon, StartupError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="the daemon: apply, health-check, keep the kernel in step")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The daemon's events (uplink.up/down, config.reload) are worth seeing by default.
    if not args.verbose:
        logging.getLogger("ecmpd").setLevel(logging.INFO)
    daemon = Daemon(Path(args.config), args.run_dir)
    try:
        asyncio.run(daemon.run())
    except StartupError as err:
        raise CommandError(str(err), EXIT_CONFIG) from err
    return EXIT_OK
