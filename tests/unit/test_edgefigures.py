"""lab.edgefigures: what an edge's failure and return did to the LAN's traffic, counted."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from ecmpd.lab.chatpool import Conn, ConnError, Slot
from ecmpd.lab.edgefigures import IdleConn, Recorded, Window, conns, pings, seen
from ecmpd.lab.pinggaps import Stream

EDGES = {
    "10.1.0.2": "edge1",
    "10.3.0.2": "edge2",
    "2001:db8:1::2": "edge1",
    "2001:db8:3::2": "edge2",
}
W = Window("edge1", fault=100.0, heal=103.0, end=105.0)
OFFSET = 1000.0  # the pings' wall clock is the monotonic one plus this


def slot(index: int, *conns_: tuple[float, float | None, str], v6: bool = False) -> Slot:
    """A slot with connections (opened, closed or None, public address); a close is a reset."""
    source = ip_address("2001:db8:200::100" if v6 else "10.200.1.1")
    s = Slot(index, source, ip_address("2001:db8:100::1" if v6 else "198.51.100.1"))
    for opened, closed, public in conns_:
        error = None if closed is None else ConnError(closed, "reset", public)
        s.conns.append(Conn(public, 40000, opened, closed, error))
        if error is not None:
            s.errors.append(error)
    return s


def stream(times: list[float]) -> Stream:
    return Stream(IPv4Address("198.51.100.1"), tuple(t + OFFSET for t in times))


def every(start: float, end: float, step: float = 0.01) -> list[float]:
    return [start + k * step for k in range(round((end - start) / step))]


def test_a_stream_that_paused_once_moved_one_that_paused_twice_was_disturbed() -> None:
    steady = stream(every(99.0, 105.0))
    moved = stream(every(99.0, 100.0) + every(100.9, 105.0))
    twice = stream(every(99.0, 100.0) + every(100.9, 103.5) + every(103.8, 105.0))
    got = pings([steady, moved, twice], W, OFFSET)
    assert (got.streams, got.moved, got.disturbed) == (3, 1, 1)
    assert abs(got.outage_s - 0.9) < 0.02


def test_connections_through_the_failed_edge_come_back_through_the_other() -> None:
    recorded = Recorded(
        streams=(),
        slots=(
            slot(0, (90.0, 100.8, "10.1.0.2"), (100.95, None, "10.3.0.2")),  # back in 0.95 s
            slot(1, (90.0, 100.8, "10.1.0.2"), (103.5, None, "10.1.0.2")),  # back after heal
            slot(2, (90.0, None, "10.3.0.2")),  # through edge2 all along: undisturbed
            slot(3, (90.0, 104.0, "10.3.0.2"), (104.1, None, "10.1.0.2")),  # broken by return
            slot(4, (90.0, None, "2001:db8:3::2"), v6=True),  # another family
        ),
        idle=(
            IdleConn(4, "edge2", True),
            IdleConn(4, "edge2", False),
            IdleConn(4, "edge1", False),  # the failed edge's: not counted
            IdleConn(6, "edge2", True),
        ),
        public_edges=EDGES,
        clock_offset=OFFSET,
    )
    got = conns(recorded, W, 4)
    assert (got.busy, got.on_failed, got.not_back) == (4, 2, 1)
    assert got.back_s == (got.back_s[0],) and abs(got.back_s[0] - 0.95) < 1e-9
    assert got.back_median_s == got.back_s[0]
    assert (got.on_other, got.disturbed_by_failure) == (2, 0)
    # At the heal: slots 0, 2 and 3 go through edge2 (slot 1 is not connected).
    assert (got.at_return, got.disturbed_by_return) == (3, 1)
    assert (got.idle_other, got.idle_broken) == (2, 1)
    v6 = seen(recorded, W)["ipv6"].conns
    assert (v6.busy, v6.on_other, v6.idle_other, v6.idle_broken) == (1, 1, 1, 0)


def test_a_long_stall_disturbs_a_short_one_does_not() -> None:
    s = slot(0, (90.0, None, "10.3.0.2"))
    s.stalls += [(100.5, 0.4), (101.5, 1.2)]
    recorded = Recorded((), (s,), (), EDGES, OFFSET)
    assert conns(recorded, W, 4).disturbed_by_failure == 1
    s.stalls[1] = (101.5, 0.6)
    assert conns(recorded, W, 4).disturbed_by_failure == 0


def test_ipv6_streams_are_counted_apart() -> None:
    v6 = Stream(IPv6Address("2001:db8:100::1"), tuple(t + OFFSET for t in every(99.0, 105.0)))
    got = seen(Recorded((stream(every(99.0, 105.0)), v6), (), (), EDGES, OFFSET), W)
    assert got["ipv4"].pings.streams == 1 and got["ipv6"].pings.streams == 1


def test_pauses_after_the_window_are_not_the_windows() -> None:
    later = stream(every(99.0, 105.0) + every(106.0, 107.0))  # paused after the end (105)
    assert pings([later], W, OFFSET).disturbed == 0 and pings([later], W, OFFSET).moved == 0
