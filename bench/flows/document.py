"""The flows benchmark's JSON document: the parts, targets, whether they were met, notes."""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import machine

TARGETS = {
    "healthy_moved_on_failure": 0,
    "moved_on_recovery": "to the recovered uplink only",
    "recovered_share_s": 1.0,
    "goodput_fraction": 0.95,
}
NOTES = [
    "moved_lookups: each flow's uplink is the router's answer to RTM_GETROUTE with iif "
    "lan0, the LAN source, the destination and the L4 keys (what a forwarded packet of "
    "that flow gets). healthy_moved counts flows that were on a surviving uplink before "
    "the failure and are on another during it; recovery_moved counts flows whose uplink "
    "differs between the failed state and after recovery. 3 equal uplinks, as in the "
    "issue (hash-threshold: 1/4 of healthy flows move on failure, 1/2 of all on recovery). "
    "A lookup is what a *new* flow gets: with ecmpd's idle_timer 0 a recovery sends the "
    "recovered uplink its share of them at once (every moved lookup goes to it), while "
    "established connections keep their uplink by their connection mark (bench.connections, "
    "moved_tcp).",
    "The anchor's route is replaced at once by hand (an ideal monitor); ecmpd's group "
    "changes through the real daemon after a gray failure (nftables drop-all in the ISP).",
    "moved_tcp: public address per connection as the server saw it; broken = any error "
    "(reset, eof, a 2 s echo stall) on the connection. A masqueraded flow that changes "
    "uplink is killed by the kernel (nf_nat_oif_changed) and reset by the server; one "
    "that kept its address is dropped by the new ISP (moved_by_source_check). Both sides "
    "hash the 5-tuple as a custom hash (policy 3, `hash` below), as the kernel does for "
    "packets from a physical LAN. The *_default_hash variants (full runs) use policy 1 "
    "(`hash: l4`, ecmpd's default): here forwarded packets carry the LAN sender's socket "
    "hash (skb->l4_hash crosses the veth) and the kernel uses it, and a sender re-draws "
    "it at every retransmission timeout, so flows also move on their own. The anchor "
    "breaks fewer than half of the connections at recovery: the ones its failure left "
    "intact are exactly those a hash-threshold recovery returns to their old uplink; "
    "the fixed flow set of moved_lookups shows the 1/2.",
    "recovered_share: time from the uplink's return to the group until it holds its "
    "weighted share of the resilient group's buckets (kernel wants; new flows hash "
    "uniformly over buckets, so this is its share of new flows). A bucket of an "
    "overweight uplink moves only once unused for idle_timer (at once if unused since "
    "its last move); the kernel checks at the earliest idle point, at most every 0.5 s.",
    "recovered_share idle_timer 0 (ecmpd's default since connection marks keep established "
    "connections on their uplink): every bucket counts as idle, so the group replace that "
    "brings the uplink back hands it its share at once; its sustained load is full speed "
    "(every bucket busy all the time). The other timers are the resilient group alone.",
    "recovered_share load 'stops': new flows (route lookups, one packet each) hit every "
    "bucket until the uplink is back, then only the long-lived connections remain: "
    "t_share ~ idle_timer (+ up to 0.5 s). load 'sustained': new flows keep arriving at "
    "lambda = 2 * buckets / idle_timer per second: a bucket needs a gap >= idle_timer, "
    "mean wait (e^(lambda*T/B) - 1) * B / lambda, so t_share scales with idle_timer at "
    "fixed lambda*T/B. With the default 60 s and unbalanced_timer 0 (never force), a LAN "
    "that hits every bucket more often than once a minute keeps the recovered uplink "
    "below its share until the load drops.",
    "goodput: bulk TCP (Python sockets, 1 MiB sendall per call) from distinct LAN clients "
    "to a sink in the internet namespace, through the router's NAT and the ISPs' TBF "
    "(both directions shaped), counted at the sink over goodput_s after warmup_s. "
    "l2_ceiling_fraction: the payload share of a full frame, the most TBF lets through.",
]


def document(
    args: argparse.Namespace,
    prefix: str,
    lookups: dict[str, Any],
    tcp: dict[str, Any],
    share: dict[str, Any],
    goodput: dict[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    """The JSON document: machine, parts, targets and whether they were met."""
    res_l = lookups["variants"]["ecmpd_resilient"]
    res_t = tcp["variants"]["ecmpd_resilient"]
    fractions = [g["ecmpd"]["fraction"] for k, g in goodput.items() if k.endswith("uplinks")]
    ours_share = [r for r in share["runs"] if r["idle_timer_s"] == 0]
    return {
        "benchmark": "flows",
        **machine(),
        "netns_prefix": prefix,
        "quick": args.quick,
        "seed": args.seed,
        "elapsed_s": round(elapsed, 1),
        "moved_lookups": lookups,
        "moved_tcp": tcp,
        "recovered_share": share,
        "goodput": goodput,
        "targets": TARGETS,
        "met": {
            "healthy_moved_on_failure": res_l["failure"]["healthy_moved"] == 0
            and res_t["failure"]["healthy_broken"] == 0,
            # New flows move to the recovered uplink only; no connection breaks.
            "moved_on_recovery": res_l["recovery"]["moved_not_to_recovered"] == 0
            and res_t["recovery"]["broken"] == 0,
            "recovered_share_s": bool(ours_share)
            and all(
                r["t_share_s"] is not None and r["t_share_s"] <= TARGETS["recovered_share_s"]
                for r in ours_share
            ),
            "goodput_fraction": all(f >= TARGETS["goodput_fraction"] for f in fractions),
        },
        "notes": NOTES,
    }
