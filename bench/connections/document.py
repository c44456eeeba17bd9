"""The connections benchmark's JSON document: the parts, targets, whether they were met."""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import machine

TARGETS = {"idle_broken_by_recovery": 0, "interrupted_back_s": 0.5}
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
    "interrupted: chat connections (a line every 100 ms, a failed one reconnects after "
    "0.1 s) from the LAN; for those on the failed uplink, the time from its leaving "
    "(ecmpd: the group change the daemon made after detecting a gray failure with the "
    "default check; anchor: a "
    "classic multipath route switched by hand after the same detection time) to each "
    "one's next connection being greeted by the server through another uplink. ecmpd "
    "resets them; the anchor's wait for TCP's own retransmission (in backoff since the "
    "fault), which after the switch leaves by another uplink and is reset by the server.",
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
    interrupted: dict[str, Any],
    cost: dict[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    """The JSON document: machine, parts, targets and whether they were met."""
    ours = idle["variants"]["ecmpd"]
    back = interrupted["variants"]["ecmpd"]["back_after_left_s"]
    return {
        "benchmark": "connections",
        **machine(),
        "netns_prefix": prefix,
        "quick": args.quick,
        "elapsed_s": round(elapsed, 1),
        "idle": idle,
        "interrupted": interrupted,
        "cost": cost,
        "targets": TARGETS,
        "met": {
            "idle_broken_by_recovery": ours["healthy_broken"] == 0,
            "interrupted_back_s": back["max"] <= TARGETS["interrupted_back_s"],
        },
        "notes": NOTES,
    }
