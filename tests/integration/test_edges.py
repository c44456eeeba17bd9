"""The scale-out lab with the real FRR: LAN -> core -> 2 edges (ecmpd + FRR) -> 4 ISPs.

Bounds are computed from the checks (health.fsm.detection_time) and BFD's interval,
with a margin for a loaded 2-core machine; bench.edges reports the figures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ecmpd.config import CheckConfig
from ecmpd.health.fsm import detection_time
from ecmpd.lab import edgerun
from ecmpd.lab.edges import BFD_MS, BFD_MULTIPLIER, EdgeRouters, edge_lab
from ecmpd.lab.peers.frr import frr_available
from ecmpd.lab.wait import wait_for
from tests.integration.fixtures.labs import next_lab_prefix, require_netns

# What a loaded 2-core machine may add to a computed bound (scheduling, FRR's queues).
MARGIN_S = 0.5
# FRR's own delay from a change of the announce table to the peer's FIB (~124 ms measured).
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

    The LAN's edge1 streams resume via edge2 within the core's detection bound, once;
    the streams through edge2 never pause, neither at the failure nor at the return
    (resilient group and connection marks at the core: a returning edge moves no flow).
    """
    result = edgerun.isps_fail(routers, "edge1")
    assert result.moved > 0, result  # some stream went through edge1 (8 servers, 2 edges)
    assert result.moved < result.streams, result  # and some through edge2
    assert result.disturbed == 0, result
    assert result.outage_s <= DETECT_S + MARGIN_S, result
    assert result.withdrawn_s <= DETECT_S + FRR_PROPAGATION_S + MARGIN_S, result


def test_the_announce_reaches_the_core_fib_in_both_families(routers: EdgeRouters) -> None:
    """Draining edge2's uplinks withdraws its 0.0.0.0/0 and ::/0 at the core; undrain restores.

    The BGP sessions stay up throughout: the core's ecmpd, ending the connections of an
    edge that left its service, leaves those to a neighbour on the link alone.
    """
    dropped = edgerun.sessions_dropped(routers)
    withdrawn, restored = edgerun.announce_to_fib(routers, "edge2")
    assert edgerun.sessions_dropped(routers) == dropped
    assert withdrawn <= FRR_PROPAGATION_S + MARGIN_S, withdrawn
    assert restored <= FRR_PROPAGATION_S + MARGIN_S, restored


def test_an_edge_forwarding_nothing_is_caught_by_the_core_alone(routers: EdgeRouters) -> None:
    """edge1 drops what it forwards; its BGP and BFD stay up, so only ecmpd's probes
    through it see it: out of the core's balancer within the detection bound."""
    took = edgerun.forwards_nothing(routers, "edge1")
    assert took <= DETECT_S + MARGIN_S, took


def test_an_edge_dying_leaves_the_core_fib_within_bfd(routers: EdgeRouters) -> None:
    """edge2's link and FRR die behind the switch (the core keeps carrier): BFD."""
    took = edgerun.edge_dies(routers, "edge2")
    assert took <= BFD_MS * BFD_MULTIPLIER / 1000 + MARGIN_S, took
    wait_for(lambda: edgerun.core_members(routers) == {"edge1"}, 2, "core follows BGP")
