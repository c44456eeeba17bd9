"""`python -m bench.mptcp`: runs the benchmark, prints its JSON document."""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import mptcp as package
from bench.common import arguments, emit, install_sigterm, machine, namespaces_missing, progress
from bench.mptcp.events import POLL_S, apply, one_run
from bench.mptcp.goodput import scenario
from ecmpd.lab import netns
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.topology import lab_session

RATES = (100, 200)
TARGET_EQUAL_RTT_SHARE = 0.90  # of the shaped sum
TARGET_UNEQUAL_RTT_GAIN = 1.5  # times the best single uplink
TARGET_GAP_S = 1.0
TARGET_RETURN_S = 2.0
NOTES = [
    "Goodput: iperf3 -R (the server sends), received bits/s after the omitted warm-up; "
    "the MPTCP runs under `mptcpize run` at both ends, endpoints put in by `ecmpd apply` "
    "(mptcp: true); plain TCP by one uplink is bound to its source (-B), `balanced` is "
    "one plain connection through ecmpd's balancer.",
    "Extra RTT: a user-space delay line in the ISP's namespace holds what it forwards "
    "towards the internet (for a download: the ACKs); this kernel has no netem.",
    "Events: a Python IPPROTO_MPTCP download of unbounded size; the uplink of its first "
    "subflow fails gray (nftables drops everything, link and ARP up) for "
    "4 s, then heals. gap_s: the longest time the application received nothing after the "
    "cut; carrying_after_return_s: from ecmpd re-adding the uplink's endpoint (its return "
    "to service) to a subflow on it having received 64 KiB; carrying_after_heal_s adds "
    "the daemon's recovery time. kernel_alone: the same endpoints, never removed (no "
    "daemon), None when the uplink did not carry again within 10 s. Times are polled every "
    "poll_s (0.0: within one poll, or carrying already before the return: the first "
    "subflow, which has no endpoint of its own, may outlive the outage).",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints its JSON document."""
    args = arguments(package, "4 s goodput runs, one event run each").parse_args(argv)
    if namespaces_missing(package):
        return 2
    install_sigterm()
    seconds, omit, runs = (4, 1, 1) if args.quick else (8, 2, 3)
    prefix = args.prefix or netns.new_prefix()
    with tempfile.TemporaryDirectory(prefix="ecmpd-bench-mptcp-") as tmp, lab_session(
        isps=2, rates_mbit=RATES, servers=2, workdir=Path(tmp) / "lab", prefix=prefix,
        ipv6=False,
    ) as lab:  # fmt: skip
        progress(f"namespaces {prefix}*")
        config = write_lab_config(lab, Path(tmp) / "ecmpd.yaml", extra={"mptcp": True})
        a, b = (isp.name for isp in lab.isps)
        work = Path(tmp) / "ecmpd"
        events = {
            "ecmpd": [one_run(lab, config, work, True) for _ in range(runs)],
            "kernel_alone": [one_run(lab, config, work, False)],
        }
        apply(lab, config, work)
        goodput = {
            "equal_rtt": scenario(lab, {}, seconds, omit),
            "rtt_10ms_60ms": scenario(lab, {a: 10, b: 60}, seconds, omit),
            "rtt_60ms_10ms": scenario(lab, {a: 60, b: 10}, seconds, omit),
        }
    emit({**document(goodput, events, seconds, omit), "netns_prefix": prefix, "quick": args.quick})
    return 0


def document(
    goodput: dict[str, dict[str, Any]], events: dict[str, list[dict[str, Any]]], seconds: int,
    omit: int,
) -> dict[str, Any]:  # fmt: skip
    """The JSON document: figures, targets and whether each was met."""
    ours = events["ecmpd"]
    gaps = [r["gap_s"] for r in ours]
    returns = [r["carrying_after_return_s"] for r in ours]
    return {
        "benchmark": "mptcp",
        **machine(),
        "rates_mbit": list(RATES),
        "iperf_seconds": seconds,
        "iperf_omit_seconds": omit,
        "goodput": goodput,
        "events": events,
        "summary": {
            "gap_s_max": max(gaps),
            "gap_s_median": statistics.median(gaps),
            "return_s_max": None if None in returns else max(returns),
            "carrying_after_heal_s_max": max(
                (r["carrying_after_heal_s"] for r in ours if r["carrying_after_heal_s"]),
                default=None,
            ),
            "poll_s": POLL_S,
            "kernel_alone_gap_s": events["kernel_alone"][0]["gap_s"],
            "kernel_alone_return_s": events["kernel_alone"][0]["carrying_after_heal_s"],
        },
        "targets": {
            "equal_rtt_share_of_shaped_sum": TARGET_EQUAL_RTT_SHARE,
            "unequal_rtt_times_best_single": TARGET_UNEQUAL_RTT_GAIN,
            "gap_s": TARGET_GAP_S,
            "return_s": TARGET_RETURN_S,
        },
        "met": {
            "equal_rtt_share_of_shaped_sum": goodput["equal_rtt"]["mptcp_vs_shaped_sum"]
            >= TARGET_EQUAL_RTT_SHARE,
            # As the issue orders them (100 Mbit/s at 10 ms, 200 at 60); the other way round
            # the line rate allows at most (shaped sum * goodput share) / best single.
            "unequal_rtt_times_best_single": goodput["rtt_10ms_60ms"]["mptcp_vs_best_single"]
            >= TARGET_UNEQUAL_RTT_GAIN,
            "gap_s": max(gaps) <= TARGET_GAP_S,
            "return_s": None not in returns and max(returns) <= TARGET_RETURN_S,
        },
        "notes": NOTES,
    }


if __name__ == "__main__":
    sys.exit(main())
