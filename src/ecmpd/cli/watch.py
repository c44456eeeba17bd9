"""`ecmpd watch`: the live view of a running daemon, with the kernel's interface counters.

State (per address family), health, RTT and loss come from the daemon's status (control
socket); throughput and shares from /proc/thread-self/net/dev of the namespace the command
runs in, which must be the daemon's (in the lab: `ip netns exec <router> ecmpd watch`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from rich.console import Console

from ecmpd.cli.common import EXIT_OK, CommandError
from ecmpd.control import DaemonNotRunning, request_status
from ecmpd.live import render
from ecmpd.livefeed import Feed
from ecmpd.liveview import LiveView

STATUS_TIMEOUT_S = 1.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "watch", help="live view: each uplink's state, RTT, loss, throughput and share"
    )
    p.add_argument(
        "--interval", type=float, default=0.25, metavar="S", help="seconds between frames"
    )
    p.add_argument(
        "--once", action="store_true", help="print one frame (rates over one interval) and exit"
    )
    p.add_argument(
        "--capacity",
        action="append",
        default=[],
        metavar="UPLINK=MBIT",
        help="draw an uplink's bar against its capacity (repeatable)",
    )
    p.set_defaults(func=run)


def parse_capacities(items: Sequence[str]) -> dict[str, float]:
    """UPLINK=MBIT items as a mapping; raises ValueError on a malformed one."""
    capacities = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--capacity {item!r}: expected UPLINK=MBIT")
        try:
            capacities[name] = float(value)
        except ValueError:
            raise ValueError(f"--capacity {item!r}: {value!r} is not a number") from None
        if capacities[name] <= 0:
            raise ValueError(f"--capacity {item!r}: must be positive")
    return capacities


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise CommandError("--interval must be positive", 1)
    try:
        capacities = parse_capacities(args.capacity)
    except ValueError as exc:
        raise CommandError(str(exc), 1) from exc

    feed = Feed(lambda: request_status(args.run_dir, STATUS_TIMEOUT_S), capacities=capacities)
    try:
        feed.sample()
    except DaemonNotRunning as exc:
        raise CommandError(f"{exc} (is `ecmpd run` running with this --run-dir?)", 1) from exc
    console = Console()
    if args.once or not console.is_terminal:
        time.sleep(args.interval)
        feed.sample()
        console.print(render(feed.snapshot()))
        return EXIT_OK
    try:
        with LiveView(console, feed.snapshot, fps=1 / args.interval):
            while True:
                time.sleep(args.interval)
                feed.sample()
    except KeyboardInterrupt:
        pass  # the way to quit
    return EXIT_OK
