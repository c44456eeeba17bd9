"""The scale-out lab with the real FRR: LAN -> core -> 2 edges (ecmpd + FRR) -> 4 ISPs.

The LAN's traffic (lab.edgetraffic, both families): 100 Hz ping streams, busy TCP
connections (an echo every 0.1 s) and idle ones, NATed at the edges (IPv6 by the lab's
NAT66), so a connection that changes edge breaks. Bounds are computed from the checks
(health.fsm.detection_time) and BFD's interval, with a margin for a loaded 2-core
machine; bench.edges reports the figures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ecmpd.config import CheckConfig
from ecmpd.health.fsm import detection_time
from ecmpd.kernel.resets import GRACE
from ecmpd.lab import edgefigures, edgerun
from ecmpd.lab.chatpool import CONNECT_TIMEOUT, RECONNECT_DELAY
from ecmpd.lab.edges import BFD_MS, BFD_MULTIPLIER, EdgeRouters, edge_lab
from ecmpd.lab.edgetraffic import EdgeTraffic
from ecmpd.lab.peers.frr import frr_available
from ecmpd.lab.wait import wait_for
from tests.integration.fixtures.labs import next_lab_prefix, require_netns

# What a loaded 2-core machine may add to a computed bound (scheduling, FRR's queues).
MARGIN_S = 0.5
# FRR's own delay from a change of the announce table to the peer's FIB: FRR 8.4 holds
# each BGP change in bgpd's process queue for 50 ms (hard-coded, not configurable), on
# the edge and again on the core, and in zebra's work queue for 10 ms (its default) on
# each side: 0.12 s before the update's way and the kernel (0.12-0.14 s measured by
# bench.edges, under load too). ecmpd's part is one netlink change (~5 ms). bgpd's 1.2 s
# subgroup coalesce timer only delays a new session's first update, and the sessions
# never drop here (asserted). 0.3 s is 2.5 times FRR's fixed holds.
FRR_PROPAGATION_S = 0.3
DETECT_S = detection_time(CheckConfig())


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
        edgerun.whole(running)
        yield running


def test_an_edges_isps_fail_lan_traffic_moves_to_the_other_edge(routers: EdgeRouters) -> None:
    """Gray failure of both of edge1's ISPs, then their repair and edge1's return.

    In both families: the LAN's streams through edge1 resume via edge2 within the core's
    detection bound, once; its connections through edge1 are reset and reconnect via
    edge2; nothing through edge2 pauses or breaks, neither at the failure nor at the
    return (idle connections answer after both): the core's resilient group and
    connection marks move no flow. The BGP sessions never drop.
    """
    with EdgeTraffic(routers.lab) as traffic:
        failed = edgerun.isps_fail(routers, "edge1")
    seen = edgefigures.seen(traffic.stop(), failed.window)
    # The core's detection, then its reconcile and ending (the entries go at once), and
    # the client's reconnect (after its delay; a SYN lost meanwhile waits for its 1 s
    # retransmission: the connection then still comes back within the connect timeout).
    back_bound = DETECT_S + GRACE + RECONNECT_DELAY + 1.0 + MARGIN_S
    for family, s in seen.items():
        p, c = s.pings, s.conns
        assert 0 < p.moved < p.streams, (family, p)  # 8 servers, 2 edges: some via each
        assert p.disturbed == 0, (family, p)
        assert p.outage_s <= DETECT_S + MARGIN_S, (family, p)
        assert c.on_failed > 0 and c.on_other > 0, (family, c)
        assert c.not_back == 0 and max(c.back_s) <= min(back_bound, CONNECT_TIMEOUT), (family, c)
        assert c.disturbed_by_failure == 0 and c.disturbed_by_return == 0, (family, c)
        assert c.at_return >= c.on_other + c.on_failed - c.not_back, (family, c)
        assert c.idle_other > 0 and c.idle_broken == 0, (family, c)
    assert failed.out_s is not None and failed.out_s <= DETECT_S + MARGIN_S, failed
    assert failed.withdrawn_s <= DETECT_S + FRR_PROPAGATION_S + MARGIN_S, failed
    assert failed.sessions_dropped == 0, failed


def test_the_announce_reaches_the_core_fib_in_both_families(routers: EdgeRouters) -> None:
    """Draining edge2's uplinks withdraws its 0.0.0.0/0 and ::/0 at the core; undrain restores.

    Bound: FRR's propagation (above) plus the margin; ecmpd's share is one reconcile.
    The BGP sessions stay up throughout: the core's ecmpd, ending the connections of an
    edge that left its service, leaves those to a neighbour on the link alone (when it
    did not, the sessions re-established and the return took 2.3 s).
    """
    dropped = edgerun.sessions_dropped(routers)
    withdrawn, restored = edgerun.announce_to_fib(routers, "edge2")
    assert edgerun.sessions_dropped(routers) == dropped
    assert withdrawn <= FRR_PROPAGATION_S + MARGIN_S, withdrawn
    assert restored <= FRR_PROPAGATION_S + MARGIN_S, restored


def test_an_edge_forwarding_nothing_is_caught_by_the_core_alone(routers: EdgeRouters) -> None:
    """edge1 drops what it forwards; its BGP and BFD stay up (the core's FIB keeps both
    paths), so only ecmpd's probes through it see it: out of the core's balancer, both
    families, within the detection bound."""
    caught = edgerun.forwards_nothing(routers, "edge1")
    assert caught.bgp_paths == (2, 2), caught
    assert caught.caught_s is not None and caught.caught_s <= DETECT_S + MARGIN_S, caught


def test_an_edge_dying_leaves_the_core_fib_within_bfd(routers: EdgeRouters) -> None:
    """edge2's link and FRR die behind the switch (the core keeps carrier): BFD."""
    took = edgerun.edge_dies(routers, "edge2")
    assert took <= BFD_MS * BFD_MULTIPLIER / 1000 + MARGIN_S, took
    wait_for(lambda: edgerun.core_members(routers) == {"edge1"}, 2, "core follows BGP")
