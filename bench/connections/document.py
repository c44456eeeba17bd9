"""The connections benchmark's JSON document: the parts, targets, whether they were met."""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import machine

TARGETS = {"idle_broken_by_recovery": 0}
NOTES = [
    "idle: connections are opened one by one (each reads its greeting, which names the "
    "public address, so the uplink), before the failure and during it; the failed uplink "
    "is taken out (ecmpd: a gray failure the real daemon detects; anchors: the route or "
    "group replaced by hand at once) and brought back, then every connection stays "
    "silent for silent_s, longer than any variant's idle timer, sends one line and waits "
    "2 s for its echo. healthy_broken counts connections on the uplinks that never "
    "failed that got no echo (a moved NATed flow is reset by the server or dropped by "
    "the source-validating ISP). The resilient anchor hands idle buckets back to the "
    "returning uplink after its idle_timer (2 s here, 60 s in ecmpd's config before "
    "connection marks); the classic route rehashes at once.",
    "cost: iperf3 (STREAMS TCP streams, LAN host to an internet server) through the "
    "router's NAT over unshaped veths, alternating rounds of ecmpd as `apply` leaves it "
    "(mark chains, mark rules) and of NAT alone (the same table without mark chains, no "
    "mark rules); the median of each. On a shared 2-core machine iperf3, the forwarding "
    "and the other tenants share the CPU: compare the two figures of one run only.",
]


def document(
    args: argparse.Namespace,
    prefix: str,
    idle: dict[str, Any],
    cost: dict[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    """The JSON document: machine, parts, targets and whether they were met."""
    ours = idle["variants"]["ecmpd"]
    return {
        "benchmark": "connections",
        **machine(),
        "netns_prefix": prefix,
        "quick": args.quick,
        "elapsed_s": round(elapsed, 1),
        "idle": idle,
        "cost": cost,
        "targets": TARGETS,
        "met": {"idle_broken_by_recovery": ours["healthy_broken"] == 0},
        "notes": NOTES,
    }
