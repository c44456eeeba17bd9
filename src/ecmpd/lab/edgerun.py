"""Scenarios of the scale-out lab, timed: for `ecmpd lab demo --edges`, bench.edges, tests.

Each takes running EdgeRouters, does one thing to one edge, times what the core saw
(its FIB's BGP default, its ecmpd's balancer group) and puts the lab back as it was
(except `edge_dies`, which leaves the edge dead: run it last). What the LAN's traffic
saw meanwhile is lab.edgetraffic's to record and lab.edgefigures' to count, over the
Window a scenario returns. `notify(kind, at)` hears each step as it happens (the demo's
live view): fault, withdrawn, out, heal, announced, back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ecmpd.control import request
from ecmpd.kernel.transport import NetlinkSocket
from ecmpd.lab import netns
from ecmpd.lab.edgefigures import Window
from ecmpd.lab.edgelayout import EdgeLab
from ecmpd.lab.edges import EdgeRouters, bgp_gateways, bgp_paths
from ecmpd.lab.faults import gray_failure, heal, load_nft
from ecmpd.lab.groups import GroupWatch
from ecmpd.lab.wait import wait_for, wait_until
from ecmpd.model import Family

SETTLE_S = 1.0
# How long a failure is held once the core took the edge out: a reconnect whose SYN
# still met the failed edge (its own ecmpd reset the connection before the core noticed)
# waits for TCP's 1 s SYN retransmission, and must come back via another edge first.
HOLD_S = 2.0
STEP_S = 0.002
BLACKHOLE = """
table inet blackhole {
    chain forward { type filter hook forward priority -300; policy drop; }
}
"""
UNBLACKHOLE = "table inet blackhole {}\ndelete table inet blackhole\n"
Notify = Callable[[str, float], None]
FAMILIES = (Family.INET, Family.INET6)


def _quiet(kind: str, at: float) -> None:
    """The default notify: nobody listens."""


@dataclass(frozen=True)
class Failed:
    """An edge's ISPs failed and came back, as the core saw it (seconds)."""

    window: Window
    withdrawn_s: float  # fault -> the edge's default gone from the core's FIB, both families
    out_s: float | None  # fault -> out of the core ecmpd's groups, both (None: no ecmpd)
    announced_s: float  # heal -> the edge's default in the core's FIB again, both families
    back_s: float | None  # heal -> back in the core ecmpd's groups, both
    sessions_dropped: int  # BGP sessions the core saw drop meanwhile


@dataclass(frozen=True)
class Blackholed:
    """An edge forwarded nothing (BGP and BFD stayed up), then forwarded again."""

    window: Window
    caught_s: float | None  # fault -> out of the core ecmpd's groups (None: never)
    bgp_paths: tuple[int, int]  # the core's BGP default's paths meanwhile (IPv4, IPv6)
    back_s: float | None  # heal -> back in the core ecmpd's groups


def paths(lab: EdgeLab) -> tuple[int, int]:
    """How many edges the core's BGP default uses, IPv4 and IPv6."""
    return len(bgp_paths(lab)), len(bgp_paths(lab, Family.INET6))


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


class _Core:
    """The core's view while a scenario runs: its BGP default and its balancer groups."""

    def __init__(self, routers: EdgeRouters) -> None:
        self.lab = routers.lab
        self.n = len(self.lab.edges)
        self.groups = GroupWatch(self.lab, FAMILIES) if "core" in routers.ecmpd else None
        # Netlink, not `ip`: polling every few ms must not load the machine it measures.
        self.sock = netns.call_in(self.lab.core, NetlinkSocket.open)

    def paths(self) -> tuple[int, int]:
        """How many edges the core's BGP default uses, IPv4 and IPv6."""
        return len(bgp_gateways(self.sock, Family.INET)), len(bgp_gateways(self.sock, Family.INET6))

    def in_groups(self, edge: str) -> tuple[bool, bool]:
        """Whether the edge is in the core's IPv4 and IPv6 groups."""
        assert self.groups is not None
        return edge in self.groups.members(Family.INET), edge in self.groups.members(Family.INET6)

    def wait(self, check: Callable[[], bool], since: float, what: str, timeout: float) -> float:
        """Seconds from `since` until check() held."""
        return wait_until(check, timeout, what, STEP_S) - since

    def wait_groups(
        self, edge: str, member: bool, since: float, timeout: float, notify: Notify
    ) -> float | None:
        """Seconds from `since` until the edge is in (or out of) both of the core's groups,
        notified as "back" ("out"); None without ecmpd on the core (no groups to watch)."""
        if self.groups is None:
            return None
        where, event = ("back in", "back") if member else ("out of", "out")
        took = self.wait(lambda: self.in_groups(edge) == (member, member), since,
                         f"{edge} {where} the core's groups", timeout)  # fmt: skip
        notify(event, since + took)
        return took

    def close(self) -> None:
        self.sock.close()
        if self.groups is not None:
            self.groups.close()


def isps_fail(
    routers: EdgeRouters, edge: str = "edge1", hold_s: float = HOLD_S, notify: Notify = _quiet
) -> Failed:
    """Gray failure of every ISP of `edge`; held until the core took it out and for
    hold_s more; then the repair, the edge's return, and SETTLE_S of watching."""
    lab, core = routers.lab, _Core(routers)
    isps = lab.edge(edge).isps
    try:
        dropped = sessions_dropped(routers)
        fault = time.monotonic()
        for isp in isps:
            gray_failure(isp.ns)
        notify("fault", fault)
        out_s = withdrawn_s = None
        try:
            out_s = core.wait_groups(edge, False, fault, 10, notify)
            withdrawn_s = core.wait(lambda: core.paths() == (core.n - 1, core.n - 1), fault,
                                    f"{edge} withdrawn at the core", 10)  # fmt: skip
            notify("withdrawn", fault + withdrawn_s)
            time.sleep(hold_s)
        finally:
            heal_at = time.monotonic()
            for isp in isps:
                heal(isp.ns)
        notify("heal", heal_at)
        announced_s = core.wait(lambda: core.paths() == (core.n, core.n), heal_at,
                                f"{edge} announced again", 30)  # fmt: skip
        notify("announced", heal_at + announced_s)
        back_s = core.wait_groups(edge, True, heal_at, 30, notify)
        time.sleep(SETTLE_S)
        return Failed(
            window=Window(edge, fault, heal_at, time.monotonic()),
            withdrawn_s=withdrawn_s,
            out_s=out_s,
            announced_s=announced_s,
            back_s=back_s,
            sessions_dropped=sessions_dropped(routers) - dropped,
        )
    finally:
        core.close()


def forwards_nothing(
    routers: EdgeRouters,
    edge: str = "edge1",
    watch_s: float = 5.0,
    hold_s: float = SETTLE_S,
    notify: Notify = _quiet,
) -> Blackholed:
    """The edge drops everything it forwards (its BGP and BFD stay up): until the core's
    ecmpd takes it out (or watch_s without ecmpd: BGP and BFD never notice) and hold_s
    more; then it forwards again."""
    lab, core = routers.lab, _Core(routers)
    try:
        fault = time.monotonic()
        load_nft(lab.edge(edge).ns, BLACKHOLE)
        notify("fault", fault)
        try:
            caught_s = core.wait_groups(edge, False, fault, watch_s, notify)
            time.sleep(watch_s if caught_s is None else hold_s)
            during = core.paths()
        finally:
            heal_at = time.monotonic()
            load_nft(lab.edge(edge).ns, UNBLACKHOLE)
        notify("heal", heal_at)
        back_s = core.wait_groups(edge, True, heal_at, 30, notify)
        time.sleep(hold_s)
        return Blackholed(Window(edge, fault, heal_at, time.monotonic()), caught_s, during, back_s)
    finally:
        core.close()


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
    wait_for(lambda: paths(lab) == (n - 1, n - 1), 5, f"{edge} withdrawn", step=STEP_S)
    withdrawn = time.monotonic() - start
    start = time.monotonic()
    for name in names:
        request(run, {"cmd": "undrain", "uplink": name})
    wait_for(lambda: paths(lab) == (n, n), 5, f"{edge} announced", step=STEP_S)
    restored = time.monotonic() - start
    whole(routers)
    return withdrawn, restored


def edge_dies(routers: EdgeRouters, edge: str = "edge2") -> float:
    """The edge's link (behind the switch) and its FRR die: seconds until the core's FIB
    drops it (BFD). Leaves the edge dead."""
    lab = routers.lab
    n = len(lab.edges)
    start = time.monotonic()
    routers.kill_edge(edge)
    wait_for(lambda: paths(lab)[0] == n - 1, 10, f"{edge} out of the core's FIB", step=STEP_S)
    return time.monotonic() - start
