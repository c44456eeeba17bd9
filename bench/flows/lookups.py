"""moved_lookups: flows moved by a failure and a recovery, asked of the router's FIB."""

from __future__ import annotations

import random
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from bench.common import progress, ratio
from bench.flows.labs import (
    FAILED,
    GROUP_TIMEOUT,
    anchor_route,
    anchor_setup,
    anchor_teardown,
    daemon_session,
    nat_lab,
    router_config,
)
from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.netlink import open_iproute
from ecmpd.lab import netns
from ecmpd.lab.faults import gray_failure, heal_gray_failure
from ecmpd.lab.groups import GroupWatch
from ecmpd.lab.layout import FIRST_LAN_CLIENT, ROUTER_LAN_IF, Lab


@dataclass(frozen=True)
class Forwarded:
    """One flow from a LAN client, as the router's FIB sees it arrive on lan0."""

    src: IPv4Address
    dst: IPv4Address
    proto: int
    sport: int
    dport: int


def forwarded_flows(lab: Lab, n: int, rng: random.Random) -> list[Forwarded]:
    """n distinct flows from 250 LAN client addresses to the lab's servers."""
    destinations = [*lab.servers, *lab.alt_servers]
    flows: set[Forwarded] = set()
    while len(flows) < n:
        flows.add(
            Forwarded(
                src=FIRST_LAN_CLIENT + rng.randrange(250),
                dst=rng.choice(destinations),
                proto=rng.choice((socket.IPPROTO_TCP, socket.IPPROTO_UDP)),
                sport=rng.randint(1024, 65535),
                dport=rng.choice((53, 80, 443, 8080, rng.randint(1, 65535))),
            )
        )
    return sorted(flows, key=lambda f: (f.src, f.dst, f.proto, f.sport, f.dport))


def fib_uplinks(lab: Lab, flows: Sequence[Forwarded]) -> list[str]:
    """The uplink the router's kernel forwards each flow by."""
    uplink_of = {isp.uplink_if: isp.name for isp in lab.isps}

    def lookup() -> list[str]:
        ipr = open_iproute()
        try:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            lan = next(i for i, name in names.items() if name == ROUTER_LAN_IF)
            out = []
            for f in flows:
                answer = nl.route_get(
                    ipr, f.dst, src=f.src, iif=lan, ip_proto=f.proto, sport=f.sport, dport=f.dport
                )
                ifname = names.get(answer.ifindex or 0, "?")
                out.append(uplink_of.get(ifname, ifname))
            return out
        finally:
            ipr.close()

    return netns.call_in(lab.router, lookup)


def moved_summary(before: list[str], failed: list[str], recovered: list[str]) -> dict[str, Any]:
    """What moved on failure (healthy and dead flows apart) and on recovery."""
    n = len(before)
    on_dead = [i for i in range(n) if before[i] == FAILED]
    on_healthy = [i for i in range(n) if before[i] != FAILED]
    healthy_moved = sum(1 for i in on_healthy if failed[i] != before[i])
    dead_moved = sum(1 for i in on_dead if failed[i] != before[i])
    recovery_moved = sum(1 for i in range(n) if recovered[i] != failed[i])
    # A minimal rebalance sends every moved lookup to the recovered uplink.
    not_to_recovered = sum(1 for i in range(n) if failed[i] != recovered[i] != FAILED)
    return {
        "flows": n,
        "split_before": dict(sorted(Counter(before).items())),
        "failure": {
            "on_failed_uplink": len(on_dead),
            "on_healthy_uplinks": len(on_healthy),
            "dead_moved": dead_moved,
            "healthy_moved": healthy_moved,
            "healthy_moved_fraction": round(healthy_moved / max(len(on_healthy), 1), 4),
            "still_on_failed_uplink": sum(1 for u in failed if u == FAILED),
        },
        "recovery": {
            "moved": recovery_moved,
            "moved_fraction": round(recovery_moved / max(n, 1), 4),
            "on_recovered_uplink": sum(1 for u in recovered if u == FAILED),
            "moved_not_to_recovered": not_to_recovered,
        },
    }


def lookups_ecmpd(
    lab: Lab, workdir: Path, flows: Sequence[Forwarded], balancer: dict[str, Any]
) -> dict[str, Any]:
    """Lookups before, during and after a gray failure, with the real daemon."""
    config = router_config(lab, workdir / "ecmpd.yaml", balancer=balancer)
    watch = GroupWatch(lab)
    try:
        with daemon_session(lab, config, workdir):
            before = fib_uplinks(lab, flows)
            gray_failure(lab.isp(FAILED).ns)
            watch.wait(lambda m: FAILED not in m, GROUP_TIMEOUT, f"{FAILED} out of the group")
            failed = fib_uplinks(lab, flows)
            heal_gray_failure(lab.ns(FAILED))
            watch.wait(
                lambda m: len(m) == len(lab.isps), GROUP_TIMEOUT, f"{FAILED} back in the group"
            )
            recovered = fib_uplinks(lab, flows)
    finally:
        watch.close()
    return moved_summary(before, failed, recovered)


def lookups_anchor(lab: Lab, flows: Sequence[Forwarded]) -> dict[str, Any]:
    """The same with a classic multipath route replaced by hand."""
    everyone = {isp.name for isp in lab.isps}
    anchor_setup(lab, nat=False)
    try:
        before = fib_uplinks(lab, flows)
        anchor_route(lab, everyone - {FAILED})
        failed = fib_uplinks(lab, flows)
        anchor_route(lab, everyone)
        recovered = fib_uplinks(lab, flows)
    finally:
        anchor_teardown(lab)
    return moved_summary(before, failed, recovered)


def bench_lookups(
    prefix: str, workdir: Path, n: int, seed: int, hash_threshold: bool
) -> dict[str, Any]:
    """Part (a): ecmpd's resilient group (and hash-threshold option) vs the anchor."""
    with nat_lab(prefix, workdir / "lab", isps=3, weights=(1, 1, 1), shaping=False) as lab:
        flows = forwarded_flows(lab, n, random.Random(seed))
        variants: dict[str, Any] = {}
        progress(f"moved_lookups: ecmpd resilient, {n} flows")
        variants["ecmpd_resilient"] = lookups_ecmpd(lab, workdir / "res", flows, {})
        if hash_threshold:
            progress("moved_lookups: ecmpd hash-threshold group")
            variants["ecmpd_hash_threshold"] = lookups_ecmpd(
                lab, workdir / "ht", flows, {"group": "hash-threshold"}
            )
        progress("moved_lookups: anchor multipath route")
        variants["anchor_multipath_route"] = lookups_anchor(lab, flows)
    ecmpd, anchor = variants["ecmpd_resilient"], variants["anchor_multipath_route"]
    return {
        "flows": n,
        "uplinks": 3,
        "weights": [1, 1, 1],
        "failed": FAILED,
        "variants": variants,
        "ratio_healthy_moved_vs_anchor": ratio(
            ecmpd["failure"]["healthy_moved"], anchor["failure"]["healthy_moved"]
        ),
        "ratio_recovery_moved_vs_anchor": ratio(
            ecmpd["recovery"]["moved"], anchor["recovery"]["moved"]
        ),
    }
