"""The failover benchmark's JSON document: results, ratios, targets, notes."""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import (
    machine,
)
from bench.failover.dual import FAMILY_HOLD
from bench.failover.traffic import TCP_PERIOD, TCP_TIMEOUT, UDP_FLOWS, UDP_PERIOD

RESTORE_DEFAULT_S = 1.0
TARGETS = {
    "restore_default_s": RESTORE_DEFAULT_S,
    "restore_tuned_s": 0.25,
    "false_transitions": 0,
    "cpu_percent": 2.0,
    "rss_mb": 60.0,
    # IPv6 has IPv4's target for a gray failure under the default check (issue 7: the
    # same timing targets): the fault, and the heal, take effect in the kernel's group
    # within 1 s. The check's worst case is 0.85 s both ways (health.fsm).
    "ipv6_detection_s": RESTORE_DEFAULT_S,
    "ipv6_recovery_s": RESTORE_DEFAULT_S,
}
NOTES = [
    "restore_udp_s: fault -> the end of the last gap of any UDP flow (kernel receive "
    "timestamps at the sink; a gap is a missing sequence number). Flows come from 32 "
    "unbound UDP sockets in the router (one datagram each per 5 ms), so a flow on the "
    "failed uplink moves once the route changes.",
    "restore_tcp_s: fault -> the completion of the first successful new connection after "
    "the last failed one (one attempt every 20 ms, 200 ms timeout each). A run where no "
    "attempt hashed onto the failed uplink counts 0 (see tcp_interrupted_runs).",
    "The fault time is taken just before `nft` starts loading the drop-all rules "
    "(fault_nft_ms: how long that takes), so restore times include it.",
    "removal_s: fault -> the uplink gone from the kernel's nexthop group (polled every "
    "2 ms); recovery_s: heal -> back in the group. carrier_*: the same for the ISP's port "
    "going down (the router's uplink loses carrier).",
    "All configs probe the lab's two targets per uplink (gateway and a server); default "
    "sets no timing keys.",
    "anchor_cron: a loop in the router namespace that, every period, pings each gateway "
    "once through its uplink (raw ICMP, 1 s timeout; the lab has no ping binary) and on a "
    "change runs `ip route replace default table 200 nexthop via .. weight ..` (a classic "
    "hash-threshold multipath route replacing ecmpd's group route, rules as ecmpd applies "
    "them). modelled_restore_s: a uniform fault phase within the period plus the "
    "tick-to-restore time measured in the short-period runs (bootstrapped).",
    "false_transitions.count: uplinks leaving service (uplink.down events in the daemon log, "
    "cross-checked by polling the kernel group every 50 ms) while every ISP drops 5% of what "
    "it receives and forwards.",
    "ipv6: a 3-ISP dual-stack lab, default check, the lab's IPv4 and IPv6 targets per "
    "uplink (gateway and a server in each family). An ISP drops one family only (nftables "
    "`meta nfproto`, input and forward; IPv6 loses neighbour discovery too, IPv4 keeps ARP). "
    "ipv6_removal_s: fault -> the ISP's IPv6 nexthop gone from the router's IPv6 balancer "
    "group (polled every 2 ms); ipv6_recovery_s: heal -> back. ipv4_*: the same for an "
    "IPv4-only fault of the same ISP in the same lab (the anchor), alternately just after "
    "and just before the IPv6 one. "
    "other_family_changes: by the family that failed, runs in which the other family's "
    "group was ever seen without every uplink, from the fault until the return (the fault "
    f"is held {FAMILY_HOLD:g} s after the removal). ipv6_detection_s / ipv6_recovery_s "
    "targets: the IPv4 gray-failure target of the default check, met by the worst run.",
    "daemon_cost: utime+stime of the daemon process (/proc/PID/stat, all threads) over the "
    "wall time, after all uplinks were up; rss from /proc/PID/status.",
]


def ratio_of(value: float | None, anchor: float | None) -> float | None:
    """value / anchor with enough digits for small ratios (None when either is missing)."""
    if value is None or anchor is None or anchor <= 1e-9:
        return None
    return round(value / anchor, 5)


def document(
    args: argparse.Namespace,
    runs: int,
    prefix: str,
    load: tuple[float, float, float],
    results: dict[str, dict[str, Any]],
    anchor: dict[str, Any],
    false_transitions: dict[str, Any],
    ipv6: dict[str, Any],
    cost: dict[str, Any],
) -> dict[str, Any]:
    """The JSON document: results, ratios to the anchor, targets and whether they were met."""

    def worst(name: str) -> float | None:
        values = [
            results[name][key]["max"]
            for key in ("restore_udp_s", "restore_tcp_s")
            if results[name][key] is not None
        ]
        return max(values) if values else None

    def median(name: str) -> float | None:
        udp = results[name]["restore_udp_s"]
        return udp["median"] if udp is not None else None

    def family(key: str, stat: str) -> float | None:
        """A figure of the dual-stack lab (ipv6_removal_s, ...), None without samples."""
        value = (ipv6[key] or {}).get(stat)
        return float(value) if value is not None else None

    def within(value: float | None, target: float) -> bool | None:
        """Whether a figure met its target, None without samples."""
        return value <= target if value is not None else None

    cron = anchor["modelled_restore_s"]
    default_worst, tuned_worst = worst("default"), worst("tuned")
    return {
        "benchmark": "failover",
        **machine(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "netns_prefix": prefix,
        "quick": bool(args.quick),
        "runs": runs,
        "seed": args.seed,
        "traffic": {
            "udp_flows": UDP_FLOWS,
            "udp_period_ms": UDP_PERIOD * 1000,
            "tcp_attempt_period_ms": TCP_PERIOD * 1000,
            "tcp_timeout_ms": TCP_TIMEOUT * 1000,
        },
        "default": results["default"],
        "tuned": results["tuned"],
        "anchor_cron": anchor,
        "ratios": {
            "default_vs_cron_median": ratio_of(median("default"), cron["median"]),
            "tuned_vs_cron_median": ratio_of(median("tuned"), cron["median"]),
            "default_vs_cron_max": ratio_of(
                (results["default"]["restore_udp_s"] or {}).get("max"), cron["max"]
            ),
            "tuned_vs_cron_max": ratio_of(
                (results["tuned"]["restore_udp_s"] or {}).get("max"), cron["max"]
            ),
            "ipv6_vs_ipv4_removal_median": ratio_of(
                family("ipv6_removal_s", "median"), family("ipv4_removal_s", "median")
            ),
            "ipv6_vs_ipv4_recovery_median": ratio_of(
                family("ipv6_recovery_s", "median"), family("ipv4_recovery_s", "median")
            ),
        },
        "false_transitions": false_transitions,
        "ipv6": ipv6,
        "daemon_cost": cost,
        "targets": TARGETS,
        "met": {
            "restore_default_s": (
                default_worst <= TARGETS["restore_default_s"] if default_worst is not None else None
            ),
            "restore_tuned_s": (
                tuned_worst <= TARGETS["restore_tuned_s"] if tuned_worst is not None else None
            ),
            "tuned_detection_bound_s": (
                results["tuned"]["detection_bound_s"] <= TARGETS["restore_tuned_s"]
            ),
            "false_transitions": false_transitions["count"] <= TARGETS["false_transitions"],
            "cpu_percent": cost["cpu_percent"] <= TARGETS["cpu_percent"],
            "rss_mb": cost["rss_mb"] <= TARGETS["rss_mb"],
            "ipv6_detection_s": within(
                family("ipv6_removal_s", "max"), TARGETS["ipv6_detection_s"]
            ),
            "ipv6_recovery_s": within(family("ipv6_recovery_s", "max"), TARGETS["ipv6_recovery_s"]),
        },
        "notes": NOTES,
    }
