"""`python -m bench.flows`: runs the benchmark, prints its JSON document."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import flows
from bench.common import arguments, emit, install_sigterm, namespaces_missing, progress
from bench.flows.document import document
from bench.flows.goodput import bench_goodput
from bench.flows.lookups import bench_lookups
from bench.flows.share import bench_share
from bench.flows.tcp import bench_tcp
from ecmpd.lab import netns


@dataclass(frozen=True)
class Plan:
    """How much of each part a run does."""

    lookup_flows: int
    connections: int
    idle_timers: tuple[int, ...]
    share_connections: int
    goodput_s: float
    warmup_s: float
    hash_threshold: bool  # also ecmpd's hash-threshold group in moved_lookups
    default_hash_tcp: bool  # moved_tcp also with the default `hash: l4` (policy 1)
    four_uplinks: bool
    ceiling: bool  # Python's unshaped throughput through the router


FULL = Plan(
    lookup_flows=12000,
    connections=300,
    idle_timers=(0, 2, 5),  # 0: ecmpd's default; 2 and 5: the anchors
    share_connections=100,
    goodput_s=10.0,
    warmup_s=2.0,
    hash_threshold=True,
    default_hash_tcp=True,
    four_uplinks=True,
    ceiling=True,
)
QUICK = Plan(
    lookup_flows=3000,
    connections=60,
    # 4 s, not 2: a LAN client thread stalled that long on a loaded 2-core machine
    # looks idle to the kernel, and its bucket may then legitimately move.
    idle_timers=(0, 4),
    share_connections=30,
    goodput_s=3.0,
    warmup_s=1.0,
    hash_threshold=False,
    default_hash_tcp=False,
    four_uplinks=False,
    ceiling=False,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = arguments(flows, "fewer flows, shorter runs")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints its JSON document."""
    args = parse_args(argv)
    if namespaces_missing(flows):
        return 2
    plan = QUICK if args.quick else FULL
    prefix = args.prefix or netns.new_prefix()
    install_sigterm()
    progress(f"namespaces {prefix}*")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ecmpd-flows-") as tmp:
        work = Path(tmp)
        lookups = bench_lookups(
            f"{prefix}m-", work / "m", plan.lookup_flows, args.seed, plan.hash_threshold
        )
        tcp = bench_tcp(f"{prefix}t-", work / "t", plan.connections, plan.default_hash_tcp)
        share = bench_share(
            f"{prefix}s-", work / "s", plan.idle_timers, plan.share_connections, args.seed
        )
        seconds, warmup = plan.goodput_s, plan.warmup_s
        goodput: dict[str, Any] = {
            "2_uplinks": bench_goodput(
                f"{prefix}g2-", work / "g2", (100, 200), 16, seconds, warmup
            ),
        }
        if plan.four_uplinks:
            # 32 flows: with 16, an uplink of weight 1/6 gets none one run in 20.
            goodput["4_uplinks"] = bench_goodput(
                f"{prefix}g4-", work / "g4", (100, 200, 100, 200), 32, seconds, warmup
            )
        if plan.ceiling:
            ceiling = bench_goodput(
                f"{prefix}gc-", work / "gc", (100, 200), 16, 3.0, 1.0, shaped=False
            )
            goodput["python_unshaped_ceiling_mbit"] = ceiling["ecmpd"]["mbit"]
    emit(document(args, prefix, lookups, tcp, share, goodput, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
