"""The scale-out lab with the real FRR: LAN -> core -> 2 edges (ecmpd + FRR) -> 4 ISPs.

Bounds are computed from the checks (health.fsm.detection_time) and BFD's interval,
with a margin for a loaded 2-core machine; the benchmark (bench.edges) reports figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ecmpd.config import CheckConfig
from ecmpd.control import request
from ecmpd.health.fsm import detection_time
from ecmpd.lab.edgelayout import EdgeLab
from ecmpd.lab.edges import BFD_MS, BFD_MULTIPLIER, EdgeRouters, bgp_paths, edge_lab
from ecmpd.lab.faults import gray_failure, heal, load_nft
from ecmpd.lab.peers.frr import frr_available
from ecmpd.lab.pinggaps import PingStreams
from ecmpd.lab.wait import wait_for
from tests.integration.fixtures.labs import next_lab_prefix, require_netns

# What a loaded 2-core machine may add to a computed bound (scheduling, FRR's queues).
MARGIN_S = 0.5
# A pause of a 100 Hz stream longer than this is a disturbance (10 replies missed).
STALL_S = 0.1
# FRR's own delay from a change of the announce table to the peer's FIB (~124 ms measured).
FRR_PROPAGATION_S = 0.3
DETECT_S = detection_time(CheckConfig())
BLACKHOLE = """
table inet blackhole {
    chain forward { type filter hook forward priority -300; policy drop; }
}
"""
UNBLACKHOLE = "table inet blackhole {}\ndelete table inet blackhole\n"


@pytest.fixture(scope="module")
def routers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeRouters]:
    require_netns()
    reason = frr_available()
    if reason is not None:
        pytest.skip(reason)
    with (
        edge_lab(2, next_lab_prefix(), tmp_path_factory.mktemp("edges")) as lab,
        EdgeRouters(lab) as running,
    ):
        wait_for(lambda: _paths(lab) == (2, 2), 30, "both edges announced, both families")
        wait_for(lambda: _core_members(running) == {"edge1", "edge2"}, 10, "core balancer")
        yield running


def _paths(lab: EdgeLab) -> tuple[int, int]:
    return len(bgp_paths(lab)), len(bgp_paths(lab, "-6"))


def _core_members(routers: EdgeRouters) -> set[str]:
    uplinks = routers.ecmpd["core"].uplinks()
    return {name for name, u in uplinks.items() if u.in_balancer}


def _healed(routers: EdgeRouters) -> None:
    wait_for(lambda: _paths(routers.lab) == (2, 2), 10, "both edges announced again")
    wait_for(lambda: _core_members(routers) == {"edge1", "edge2"}, 10, "core balancer whole")


def test_an_edges_isps_fail_lan_traffic_moves_to_the_other_edge(routers: EdgeRouters) -> None:
    """Gray failure of both of edge1's ISPs, then their repair and edge1's return.

    The LAN's edge1 streams resume via edge2 within the core's detection bound, once;
    the streams through edge2 never pause, neither at the failure nor at the return
    (resilient group and connection marks at the core: a returning edge moves no flow).
    """
    lab = routers.lab
    edge1 = lab.edge("edge1")
    with PingStreams(lab.lan, lab.servers) as pings:
        time.sleep(1.0)
        fault = time.time()
        for isp in edge1.isps:
            gray_failure(isp.ns)
        try:
            wait_for(lambda: _paths(lab) == (1, 1), DETECT_S + FRR_PROPAGATION_S + MARGIN_S,
                     "edge1 withdrawn from the core's FIB")  # fmt: skip
            time.sleep(1.0)
        finally:
            for isp in edge1.isps:
                heal(isp.ns)
        _healed(routers)
        time.sleep(1.0)
    pauses = {str(s.server): [g for g in s.gaps_after(fault) if g > STALL_S] for s in pings.streams}
    moved = {server: p for server, p in pauses.items() if p}
    assert moved, pauses  # some stream went through edge1 (8 servers over 2 edges)
    assert len(moved) < len(pauses), pauses  # and some through edge2, never paused
    for server, p in moved.items():
        assert len(p) == 1 and p[0] <= DETECT_S + MARGIN_S, (server, pauses)


def test_the_announce_reaches_the_core_fib_in_both_families(routers: EdgeRouters) -> None:
    """Draining edge2's uplinks withdraws its 0.0.0.0/0 and ::/0 at the core; undrain restores."""
    lab = routers.lab
    run = routers.ecmpd["edge2"].run_dir
    names = [isp.name for isp in lab.edge("edge2").isps]
    for name in names:
        request(run, {"cmd": "drain", "uplink": name})
    took = wait_for(lambda: _paths(lab) == (1, 1), 5, "edge2 withdrawn, both families")
    assert took <= FRR_PROPAGATION_S + MARGIN_S, took
    for name in names:
        request(run, {"cmd": "undrain", "uplink": name})
    took = wait_for(lambda: _paths(lab) == (2, 2), 5, "edge2 announced again")
    assert took <= FRR_PROPAGATION_S + MARGIN_S, took
    _healed(routers)


def test_an_edge_forwarding_nothing_is_caught_by_the_core_alone(routers: EdgeRouters) -> None:
    """edge1 drops what it forwards; its BGP and BFD stay up, so only ecmpd's probes
    through it see it: out of the core's balancer within the detection bound."""
    lab = routers.lab
    edge1 = lab.edge("edge1")
    load_nft(edge1.ns, BLACKHOLE)
    try:
        took = wait_for(lambda: _core_members(routers) == {"edge2"}, 5, "edge1 out at the core")
        assert took <= DETECT_S + MARGIN_S, took
        assert _paths(lab) == (2, 2)  # BGP never noticed
    finally:
        load_nft(edge1.ns, UNBLACKHOLE)
    _healed(routers)


def test_an_edge_dying_leaves_the_core_fib_within_bfd(routers: EdgeRouters) -> None:
    """edge2's link and FRR die behind the switch (the core keeps carrier): BFD."""
    lab = routers.lab
    start = time.monotonic()
    routers.kill_edge("edge2")
    wait_for(lambda: len(bgp_paths(lab)) == 1, 5, "edge2 out of the core's FIB")
    took = time.monotonic() - start
    assert took <= BFD_MS * BFD_MULTIPLIER / 1000 + MARGIN_S, took
    wait_for(lambda: _core_members(routers) == {"edge1"}, 2, "core ecmpd follows BGP")
