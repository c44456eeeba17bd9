"""Scenarios of the scale-out lab, measured: for `ecmpd lab demo --edges`, bench.edges, tests.

Each takes running EdgeRouters, does one thing to one edge, measures, and puts the lab
back as it was (except `edge_dies`, which leaves the edge dead: run it last).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ecmpd.control import request
from ecmpd.lab.edgelayout import EdgeLab
from ecmpd.lab.edges import EdgeRouters, bgp_paths
from ecmpd.lab.faults import gray_failure, heal, load_nft
from ecmpd.lab.pinggaps import PingStreams
from ecmpd.lab.wait import wait_for

STALL_S = 0.1  # a pause of a 100 Hz stream longer than this is a disturbance
SETTLE_S = 1.0
BLACKHOLE = """
table inet blackhole {
    chain forward { type filter hook forward priority -300; policy drop; }
}
"""
UNBLACKHOLE = "table inet blackhole {}\ndelete table inet blackhole\n"


@dataclass(frozen=True)
class Failover:
    """An edge's ISPs failed and came back, as the LAN's streams saw it."""

    outage_s: float  # the longest pause of a stream that went through the failed edge
    moved: int  # streams that paused once (they went through the failed edge)
    disturbed: int  # streams through the other edge that paused at all (failure or return)
    streams: int
    withdrawn_s: float  # fault -> the edge's default gone from the core's FIB


def paths(lab: EdgeLab) -> tuple[int, int]:
    """How many edges the core's BGP default uses, IPv4 and IPv6."""
    return len(bgp_paths(lab)), len(bgp_paths(lab, "-6"))


def core_members(routers: EdgeRouters) -> set[str]:
    """The edges in the core ecmpd's balancer."""
    return {n for n, u in routers.ecmpd["core"].uplinks().items() if u.in_balancer}


def sessions_dropped(routers: EdgeRouters) -> int:
    """How many times the core's BGP sessions dropped so far (FRR's counters, all peers)."""
    peers = routers.frr["core"].json("show bgp neighbors json")
    return sum(int(p.get("connectionsDropped", 0)) for p in peers.values())


def whole(routers: EdgeRouters, timeout: float = 30.0) -> None:
    """Waits until every edge is announced (both families) and, with ecmpd, balanced."""
    n = len(routers.lab.edges)
    wait_for(lambda: paths(routers.lab) == (n, n), timeout, "every edge announced")
    if "core" in routers.ecmpd:
        names = {e.name for e in routers.lab.edges}
        wait_for(lambda: core_members(routers) == names, timeout, "the core's balancer whole")


def isps_fail(routers: EdgeRouters, edge: str = "edge1") -> Failover:
    """Gray failure of every ISP of `edge`, then the repair and the edge's return."""
    lab = routers.lab
    isps = lab.edge(edge).isps
    n = len(lab.edges)
    with PingStreams(lab.lan, lab.servers) as pings:
        time.sleep(SETTLE_S)
        fault, start = time.time(), time.monotonic()
        for isp in isps:
            gray_failure(isp.ns)
        try:
            wait_for(lambda: paths(lab)[0] == n - 1, 10, f"{edge} withdrawn at the core")
            withdrawn = time.monotonic() - start
            time.sleep(SETTLE_S)
        finally:
            for isp in isps:
                heal(isp.ns)
        whole(routers)
        time.sleep(SETTLE_S)
    pauses = [[g for g in s.gaps_after(fault) if g > STALL_S] for s in pings.streams]
    moved = [p for p in pauses if len(p) == 1]
    return Failover(
        outage_s=max((p[0] for p in moved), default=0.0),
        moved=len(moved),
        disturbed=sum(1 for p in pauses if len(p) > 1),
        streams=len(pauses),
        withdrawn_s=withdrawn,
    )


def announce_to_fib(routers: EdgeRouters, edge: str = "edge2") -> tuple[float, float]:
    """(withdrawn, restored): seconds from draining (undraining) the edge's uplinks to
    the core's FIB, both families."""
    lab = routers.lab
    run = routers.ecmpd[edge].run_dir
    names = [isp.name for isp in lab.edge(edge).isps]
    n = len(lab.edges)
    start = time.monotonic()
    for name in names:
        request(run, {"cmd": "drain", "uplink": name})
    wait_for(lambda: paths(lab) == (n - 1, n - 1), 5, f"{edge} withdrawn", step=0.002)
    withdrawn = time.monotonic() - start
    start = time.monotonic()
    for name in names:
        request(run, {"cmd": "undrain", "uplink": name})
    wait_for(lambda: paths(lab) == (n, n), 5, f"{edge} announced", step=0.002)
    restored = time.monotonic() - start
    whole(routers)
    return withdrawn, restored


def forwards_nothing(routers: EdgeRouters, edge: str = "edge1", watch_s: float = 5.0) -> float:
    """An edge drops everything it forwards: seconds until the core's ecmpd takes it out
    (inf without ecmpd on the core: BGP and BFD never notice within watch_s)."""
    lab = routers.lab
    n = len(lab.edges)
    load_nft(lab.edge(edge).ns, BLACKHOLE)
    start = time.monotonic()
    try:
        if "core" in routers.ecmpd:
            others = {e.name for e in lab.edges} - {edge}
            wait_for(lambda: core_members(routers) == others, watch_s, f"{edge} out")
            return time.monotonic() - start
        while time.monotonic() - start < watch_s:
            if paths(lab)[0] < n:
                return time.monotonic() - start
            time.sleep(0.02)
        return float("inf")
    finally:
        load_nft(lab.edge(edge).ns, UNBLACKHOLE)
        whole(routers)


def edge_dies(routers: EdgeRouters, edge: str = "edge2") -> float:
    """The edge's link (behind the switch) and its FRR die: seconds until the core's FIB
    drops it (BFD). Leaves the edge dead."""
    lab = routers.lab
    n = len(lab.edges)
    start = time.monotonic()
    routers.kill_edge(edge)
    wait_for(lambda: paths(lab)[0] == n - 1, 10, f"{edge} out of the core's FIB", step=0.002)
    return time.monotonic() - start
