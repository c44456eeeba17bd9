"""`python -m bench.demo`: runs the benchmark, prints its JSON document."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import demo
from bench.common import arguments, emit, install_sigterm, machine, namespaces_missing, progress
from ecmpd.lab import netns
from ecmpd.lab.demo import DEFAULT_DURATION_S, DemoOptions, run_demo

RUNS, QUICK_RUNS = 5, 1
QUICK_DURATION_S = 30.0
TARGET_S = 0.5
VARIANTS = {"ecmpd": True, "no_queue": False}  # name -> queues on the uplinks
NOTES = [
    "Each run is `ecmpd lab demo --no-live --json` (with --no-queue for the anchor) in a "
    "fresh lab; the variants alternate, so both meet the same machine load. last_s: when "
    "the last interrupted flow's sink received its bytes again, after the failed uplink "
    "left the group (the daemon's group change); median_s: the median flow of the run.",
]


def one_run(prefix: str, workdir: Path, queues: bool, duration: float) -> dict[str, Any]:
    """One demo run's failover figures."""
    options = DemoOptions(duration_s=duration, prefix=prefix, queues=queues)
    result = run_demo(workdir, options, progress=lambda _line: None)
    fo = result["failover"]
    return {
        "interrupted_flows": fo["interrupted_flows"],
        "reset_s": fo["reset_after_removal_ms"] / 1000,
        "reconnected_median_s": fo["reconnected_after_removal_ms"] / 1000,
        "median_s": fo["restore_median_after_removal_ms"] / 1000,
        "last_s": fo["restore_after_removal_ms"] / 1000,
        "reconnected_last_s": (fo["reconnected_last_after_removal_ms"] or 0) / 1000,
        "last_flow_established": fo["last_flow_established_at_fault"],
    }


def variant_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over a variant's runs: the last flows' median and worst, and how many met the target."""
    last = [r["last_s"] for r in runs]
    return {
        "runs": runs,
        "last_median_s": round(statistics.median(last), 3),
        "last_worst_s": round(max(last), 3),
        "median_median_s": round(statistics.median(r["median_s"] for r in runs), 3),
        "within_target": sum(1 for t in last if t <= TARGET_S),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints its JSON document."""
    parser = arguments(demo, f"{QUICK_RUNS} run each, {QUICK_DURATION_S:g} s of traffic")
    parser.add_argument("--runs", type=int, help=f"runs per variant (default {RUNS})")
    args = parser.parse_args(argv)
    if namespaces_missing(demo):
        return 2
    prefix = args.prefix or netns.new_prefix()
    install_sigterm()
    runs = args.runs or (QUICK_RUNS if args.quick else RUNS)
    duration = QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S
    started = time.monotonic()
    done: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="ecmpd-bench-demo-") as tmp:
        for i in range(runs):
            for name, queues in VARIANTS.items():
                progress(f"demo run {i + 1}/{runs}: {name}")
                work = Path(tmp) / f"{name}{i}"
                got = one_run(f"{prefix}{i}{name[0]}-", work, queues, duration)
                progress(f"  last flow back {got['last_s']:.3f} s after the uplink left")
                done[name].append(got)
    variants = {name: variant_summary(r) for name, r in done.items()}
    ours = variants["ecmpd"]
    emit(
        {
            "benchmark": "demo",
            **machine(),
            "netns_prefix": prefix,
            "quick": args.quick,
            "duration_s": duration,
            "elapsed_s": round(time.monotonic() - started, 1),
            "variants": variants,
            "notes": NOTES,
            "targets": {"every_flow_back_s": TARGET_S},
            "met": {"every_flow_back_s": ours["within_target"] == runs},
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
