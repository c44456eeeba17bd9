"""`python -m bench.failover`: runs the benchmark, prints its JSON document."""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import failover
from bench.common import (
    arguments,
    emit,
    install_sigterm,
    namespaces_missing,
    progress,
)
from bench.failover.cost import COST_ISPS, cost_phase
from bench.failover.cron import CronMonitor, anchor_result, anchor_run, setup_anchor
from bench.failover.document import document
from bench.failover.dual import ipv6_phase
from bench.failover.loss import loss_phase
from bench.failover.runs import Side, carrier_run, gray_run, guarded, side_result, write_config
from bench.failover.traffic import UDP_FLOWS, UDP_PORT_FIRST, UDP_PORT_SPAN
from ecmpd.lab import netns
from ecmpd.lab.daemon import running_daemon
from ecmpd.lab.groups import GroupWatch
from ecmpd.lab.layout import Lab
from ecmpd.lab.topology import lab_session

# 40 ms x 3 with a 70 ms timeout: worst-case detection 0.19 s (health.fsm.detection_time),
# leaving room under the 0.25 s target for the group change and the traffic's own sampling.
TUNED_CHECK = {"interval": "40ms", "timeout": "70ms", "down_after": 3, "up_after": 3}
FULL = {
    "runs": 10,
    "anchor_runs": 5,
    "cron_period": 6.0,
    "ipv6_runs": 10,
    "loss_s": 600.0,
    "cost_s": 30.0,
}
QUICK = {
    "runs": 2,
    "anchor_runs": 1,
    "cron_period": 3.0,
    "ipv6_runs": 2,
    "loss_s": 15.0,
    "cost_s": 5.0,
}


def restore_phase(
    sides: Sequence[Side],
    anchor: tuple[Lab, CronMonitor],
    runs: int,
    anchor_runs: int,
    rng: random.Random,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Interleaved runs: each config's gray and carrier runs, then an anchor run."""
    anchor_lab, cron = anchor
    anchor_samples: list[dict[str, Any]] = []
    anchor_failures: list[str] = []
    ports = iter(range(10**6))

    def port_base() -> int:
        return UDP_PORT_FIRST + (next(ports) * UDP_FLOWS) % (UDP_PORT_SPAN - UDP_FLOWS)

    for k in range(runs):
        for side in sides:

            def gray(side: Side = side, k: int = k) -> dict[str, Any]:
                row = gray_run(side, k, port_base(), rng)
                side.runs.append(row)
                return row

            def carrier(side: Side = side, k: int = k) -> dict[str, Any]:
                row = carrier_run(side, k + 1, port_base())
                side.carrier_runs.append(row)
                return row

            progress(f"run {k + 1}/{runs}: {side.name} gray failure")
            guarded(side.failures, f"{side.name} gray run {k + 1}", gray)
            progress(f"run {k + 1}/{runs}: {side.name} carrier loss")
            guarded(side.failures, f"{side.name} carrier run {k + 1}", carrier)
        if k < anchor_runs:

            def cron_run(k: int = k) -> dict[str, Any]:
                row = anchor_run(anchor_lab, cron, k, port_base(), rng)
                anchor_samples.append(row)
                return row

            progress(f"run {k + 1}/{runs}: anchor (cron every {cron.period:g} s)")
            guarded(anchor_failures, f"anchor run {k + 1}", cron_run)
    return anchor_samples, anchor_failures


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = arguments(failover, "few runs, short durations")
    p.add_argument("--runs", type=int, help="gray and carrier runs per config (default 10)")
    p.add_argument("--anchor-runs", type=int, help="real cron runs at the short period")
    p.add_argument("--cron-period", type=float, help="the short cron period, seconds")
    p.add_argument("--ipv6-runs", type=int, help="IPv6 (and IPv4 anchor) gray runs (default 10)")
    p.add_argument("--loss-seconds", type=float, help="duration of the 5%% loss phase")
    p.add_argument("--cost-seconds", type=float, help="duration of the CPU/RSS measurement")
    p.add_argument("--seed", type=int, default=1, help="fault phases, jitter and the model")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints its JSON document."""
    args = parse_args(argv)
    if namespaces_missing(failover):
        return 2
    preset = QUICK if args.quick else FULL
    runs = args.runs if args.runs is not None else int(preset["runs"])
    anchor_runs = args.anchor_runs if args.anchor_runs is not None else int(preset["anchor_runs"])
    period = args.cron_period or preset["cron_period"]
    ipv6_runs = args.ipv6_runs if args.ipv6_runs is not None else int(preset["ipv6_runs"])
    loss_s = args.loss_seconds if args.loss_seconds is not None else preset["loss_s"]
    cost_s = args.cost_seconds if args.cost_seconds is not None else preset["cost_s"]
    prefix = args.prefix or netns.new_prefix()
    rng = random.Random(args.seed)
    install_sigterm()
    # The traffic threads and the 2 ms group poll share the interpreter: hand the GIL
    # over more often than every 5 ms so none of them waits a whole slice.
    sys.setswitchinterval(0.0005)
    load = os.getloadavg()
    progress(f"namespaces {prefix}*")
    with tempfile.TemporaryDirectory(prefix="ecmpd-failover-") as tmp_name:
        tmp = Path(tmp_name)
        with contextlib.ExitStack() as stack:
            sides: list[Side] = []
            for name, check, suffix in (("default", None, "d-"), ("tuned", TUNED_CHECK, "t-")):
                progress(f"building the {name} lab")
                lab = stack.enter_context(
                    lab_session(workdir=tmp / name, isps=3, prefix=f"{prefix}{suffix}")
                )
                config = write_config(lab, tmp / f"{name}.yaml", check)
                daemon = stack.enter_context(
                    running_daemon(lab.router, tmp / f"{name}.yaml", tmp / f"{name}-daemon")
                )
                watch = stack.enter_context(GroupWatch(lab))
                sides.append(Side(name, lab, config, daemon, watch))
            progress("building the anchor lab")
            anchor_lab = stack.enter_context(
                lab_session(workdir=tmp / "anchor", isps=3, prefix=f"{prefix}a-")
            )
            setup_anchor(anchor_lab, tmp / "anchor-apply")
            cron = CronMonitor(anchor_lab, period)
            cron.start()
            stack.callback(cron.stop)
            cron.check_route()
            for side in sides:
                side.settle()
            anchor_samples, anchor_failures = restore_phase(
                sides, (anchor_lab, cron), runs, anchor_runs, rng
            )
            progress(f"5% loss on every ISP for {loss_s:g} s")
            false_transitions = loss_phase(sides, cron, loss_s)
            results = {side.name: side_result(side) for side in sides}
        # On its own: the three labs above are gone, so their daemons add no noise.
        progress(f"dual-stack lab: {ipv6_runs} IPv6 and IPv4 gray runs")
        ipv6 = ipv6_phase(tmp / "dual", f"{prefix}6-", ipv6_runs, rng)
        progress(f"daemon cost: {COST_ISPS} uplinks for {cost_s:g} s")
        cost = cost_phase(tmp / "cost", f"{prefix}c-", cost_s)
    anchor = anchor_result(period, anchor_samples, anchor_failures, rng)
    emit(document(args, runs, prefix, load, results, anchor, false_transitions, ipv6, cost))
    return 0


if __name__ == "__main__":
    sys.exit(main())
