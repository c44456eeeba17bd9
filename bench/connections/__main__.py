"""`python -m bench.connections`: runs the benchmark, prints its JSON document."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import connections
from bench.common import arguments, emit, install_sigterm, namespaces_missing, progress
from bench.connections.cost import bench_cost
from bench.connections.document import document
from bench.connections.idle import BUCKETS, bench_idle
from bench.connections.interrupted import bench_interrupted
from ecmpd.lab import netns


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints its JSON document."""
    args = arguments(connections, "fewer connections, shorter rounds").parse_args(argv)
    if namespaces_missing(connections):
        return 2
    prefix = args.prefix or netns.new_prefix()
    install_sigterm()
    progress(f"namespaces {prefix}*")
    started = time.monotonic()
    # Three times as many connections as the group has buckets (a third more opened during
    # the failure): a resilient group then finds too few never-used buckets to hand back
    # at once and must take busy-once, now idle ones (with fewer it breaks nothing).
    before = 3 * BUCKETS
    with tempfile.TemporaryDirectory(prefix="ecmpd-connections-") as tmp:
        work = Path(tmp)
        idle = bench_idle(f"{prefix}i-", work / "i", before, before // 3)
        interrupted = bench_interrupted(f"{prefix}r-", work / "r", 60 if args.quick else 300)
        rounds, seconds = (2, 2.0) if args.quick else (8, 4.0)
        cost = bench_cost(f"{prefix}c-", work / "c", rounds, seconds)
    emit(document(args, prefix, idle, interrupted, cost, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
