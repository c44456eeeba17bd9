"""`python -m bench.apply`: runs the benchmark, prints its JSON document."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bench import apply
from bench.apply.measure import bench_uplinks
from bench.common import (
    arguments,
    emit,
    install_sigterm,
    machine,
    namespaces_missing,
    progress,
)
from bench.veth import (
    Namespaces,
)
from ecmpd.lab import netns

FULL_UPLINKS = (2, 8, 32, 64)
QUICK_UPLINKS = (2, 8)
FULL_REPS, QUICK_REPS = 5, 2
# Failover flips are cheap (one message each): enough for a stable median.
FULL_FLIPS, QUICK_FLIPS = 40, 20
TARGET_APPLY_64_MS = 100
TARGET_FAILOVER_MS = 2
NOTES = [
    "ecmpd times are in-process wall ms of reconcile()/execute() in the target namespace "
    "(no interpreter start-up or config parsing).",
    "anchor_ip_batch_ms: `ip -batch` of state_commands() (leading `ip ` stripped) minus an "
    "empty `ip -batch` run just before it (process start-up), plus writing the sysctls "
    "directly, plus `nft -j -f` of the connection-mark table (start-up included, as by "
    "hand; ecmpd runs libnftables in-process); raw figures are under anchor_ip_batch.",
    "anchor_multipath_replace_ms: one `ip route replace default nexthop via .. nexthop via ..` "
    "(hash-threshold multipath, uplink 0 removed) minus an empty `ip -batch`; "
    "netlink_ms is the same replace sent in-process with pyroute2.",
    "failover_ms: ecmpd's one nexthop-group replace removing uplink 0 (default resilient "
    "group); failback_ms puts it back.",
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = arguments(apply, "N in (2, 8), fewer repetitions")
    p.add_argument("--uplinks", help="comma-separated uplink counts (default 2,8,32,64)")
    p.add_argument("--reps", type=int, help="apply repetitions per uplink count")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints its JSON document."""
    args = parse_args(argv)
    if namespaces_missing(apply):
        return 2
    counts = [int(x) for x in args.uplinks.split(",")] if args.uplinks else None
    counts = counts or list(QUICK_UPLINKS if args.quick else FULL_UPLINKS)
    reps = args.reps or (QUICK_REPS if args.quick else FULL_REPS)
    flips = QUICK_FLIPS if args.quick else FULL_FLIPS
    install_sigterm()
    results = []
    with Namespaces(args.prefix or netns.new_prefix()) as spaces:
        progress(f"namespaces {spaces.prefix}*")
        for n in counts:
            results.append(bench_uplinks(spaces, n, reps, flips))
    by_n = {r["uplinks"]: r for r in results}
    worst_failover = max(r["failover_ms"]["median"] for r in results)
    emit(
        {
            "benchmark": "apply",
            **machine(),
            "netns_prefix": spaces.prefix,
            "repetitions": reps,
            "failover_flips": flips,
            "results": results,
            "targets": {"apply_64_ms": TARGET_APPLY_64_MS, "failover_ms": TARGET_FAILOVER_MS},
            "met": {
                "apply_64_ms": (
                    by_n[64]["apply_ms"]["median"] <= TARGET_APPLY_64_MS if 64 in by_n else None
                ),
                "failover_ms": worst_failover <= TARGET_FAILOVER_MS,
            },
            "notes": NOTES,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
