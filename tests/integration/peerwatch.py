"""Test helpers for uplinks driven by real peers: how fast ecmpd follows, who else moved."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

from ecmpd.lab.topology import Lab
from ecmpd.model import IPV6_ID_OFFSET, NH_ID_BASE
from tests.integration.daemonproc import wait_for
from tests.integration.kernelstate import ip_json

# The bound: a change of an uplink's line is followed within a second.
FOLLOW = 1.0
# How long the real peer may take to make the change (a DHCP exchange, the first
# router advertisement, a TLS handshake): not ecmpd's time, only a test's patience.
PEER = 15.0


def follows(kernel: Callable[[], bool], ecmpd: Callable[[], bool], what: str) -> float:
    """Waits for the peer's change in the kernel, then for ecmpd's; ecmpd's delay."""
    wait_for(kernel, PEER, f"the peer: {what}")
    took = wait_for(ecmpd, FOLLOW, f"ecmpd to follow within {FOLLOW} s: {what}")
    return took


def main_defaults(lab: Lab, dev: str, family: str = "-4") -> set[str]:
    """Gateways of the default routes in main out of dev (what DHCP/RA installed)."""
    routes = ip_json(lab.router, family, "route", "show", "default")
    return {str(r.get("gateway")) for r in routes if r.get("dev") == dev}


def nexthop_gateway(lab: Lab, nh_id: int, family: str = "-4") -> str | None:
    """The gateway of one of ecmpd's nexthops (None: no such nexthop, or no gateway)."""
    for nh in ip_json(lab.router, family, "nexthop", "show"):
        if nh.get("id") == nh_id:
            gateway = nh.get("gateway")
            return None if gateway is None else str(gateway)
    return None


def has_nexthop(lab: Lab, nh_id: int, family: str = "-4") -> bool:
    """Whether one of ecmpd's nexthops exists."""
    return any(nh.get("id") == nh_id for nh in ip_json(lab.router, family, "nexthop", "show"))


def others(lab: Lab, devices: Collection[str], tables: Collection[int]) -> dict[str, Any]:
    """The nexthops on these devices and the routes of these tables, comparable with ==.

    What must not move while another uplink's line changes.
    """
    nexthops = [
        nh
        for family in ("-4", "-6")
        for nh in ip_json(lab.router, family, "nexthop", "show")
        if nh.get("dev") in devices
    ]
    wanted = {str(t) for t in tables}
    routes = [
        route
        for family in ("-4", "-6")
        for route in ip_json(lab.router, family, "route", "show", "table", "all")
        if str(route.get("table")) in wanted
    ]
    found: dict[str, Any] = {
        "nexthops": sorted(nexthops, key=json.dumps),
        "routes": sorted(routes, key=json.dumps),
    }
    return found


def balancer(lab: Lab, family: str = "-4", extra: Mapping[int, str] | None = None) -> set[str]:
    """The members of ecmpd's balancer group in a family, by uplink name.

    The lab's ISPs are known by their tables (101, 102, ...); `extra` names other
    uplinks' tables (a tunnel's).
    """
    offset = IPV6_ID_OFFSET if family == "-6" else 0
    names = {NH_ID_BASE + offset + 101 + i: isp.name for i, isp in enumerate(lab.isps)}
    names |= {NH_ID_BASE + offset + table: name for table, name in (extra or {}).items()}
    # Not `ip -4 nexthop show`: groups have no family and only show unfiltered.
    for nh in ip_json(lab.router, "nexthop", "show"):
        if nh.get("id") == NH_ID_BASE + offset + 200:
            return {names[m["id"]] for m in nh.get("group", [])}
    return set()


def addresses(lab: Lab, dev: str) -> set[str]:
    """The IPv4 addresses on one of the router's devices (what a peer configured)."""
    return {
        a["local"]
        for link in ip_json(lab.router, "-4", "addr", "show", "dev", dev)
        for a in link.get("addr_info", [])
    }


def rule_sources(lab: Lab) -> set[str]:
    """The source addresses of the router's rules (ecmpd's per-uplink reply rules)."""
    return {str(r["src"]) for r in ip_json(lab.router, "rule", "show") if "src" in r}


def went_down(log: str, uplink: str) -> int:
    """How often the daemon's log says the uplink went down (any family)."""
    count = 0
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("uplink") == uplink and event.get("new") == "down":
                count += 1
    return count
