"""Pure: what an edge's failure and return did to the LAN's traffic (lab.edgetraffic's
records), per IP version. Shared by `ecmpd lab demo --edges`, bench.edges and the tests.

Times are time.monotonic() seconds; the ping streams' wall-clock receive times are
moved onto that clock by the offset the traffic recorded.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ecmpd.lab.chatpool import Slot
from ecmpd.lab.pinggaps import Stream
from ecmpd.model import FAMILY_NAMES, Family

# A ping stream (100 Hz) silent this long paused: far above scheduling jitter.
PING_STALL_S = 0.1
# A busy connection (an echo every 0.1 s) whose echo is this late was disturbed: above a
# lost segment's retransmission (RTO >= 0.2 s) plus a loaded machine's scheduling, below
# the pool's echo timeout (a connection moved to the other edge breaks well before).
CONN_STALL_S = 1.0


@dataclass(frozen=True)
class IdleConn:
    """One idle connection: its family, the edge it went through, whether it still answered."""

    version: int
    edge: str | None
    answered: bool


@dataclass(frozen=True)
class Recorded:
    """What lab.edgetraffic recorded: the figures' only input."""

    streams: tuple[Stream, ...]
    slots: tuple[Slot, ...]
    idle: tuple[IdleConn, ...]
    public_edges: dict[str, str]  # NAT address a server saw -> the edge
    clock_offset: float  # time.time() - time.monotonic(): the pings' clock onto the others'


@dataclass(frozen=True)
class Window:
    """One edge's failure: when it began, when it was healed, when watching ended."""

    edge: str  # the edge whose ISPs failed (or that forwarded nothing)
    fault: float
    heal: float
    end: float


@dataclass(frozen=True)
class Pings:
    """Ping streams of one IP version."""

    streams: int
    moved: int  # paused once: they went through the failed edge and came back by another
    outage_s: float  # the longest such pause
    disturbed: int  # paused more than once (by the failure and the return, or twice)


@dataclass(frozen=True)
class Conns:
    """Busy and idle TCP connections of one IP version."""

    busy: int
    on_failed: int  # busy ones through the failed edge at the fault
    back_s: tuple[float, ...]  # each of those: fault -> reconnected through another edge
    not_back: int  # of those, not reconnected by the heal
    on_other: int  # busy ones through another edge at the fault
    disturbed_by_failure: int  # of those: an error or a stall between fault and heal
    at_return: int  # busy ones through another edge at the heal (reconnected ones too)
    disturbed_by_return: int  # of those: an error or a stall between heal and end
    idle_other: int  # idle ones through another edge
    idle_broken: int  # of those, silent at the end (no echo)

    @property
    def back_median_s(self) -> float | None:
        """The median reconnection time, None when none came back."""
        return statistics.median(self.back_s) if self.back_s else None


def pings(streams: Sequence[Stream], window: Window, offset: float) -> Pings:
    """The streams' pauses from the fault to the window's end (offset: wall clock minus
    monotonic)."""
    end = window.end + offset
    pauses = [
        [g for g in _until(s, end).gaps_after(window.fault + offset) if g > PING_STALL_S]
        for s in streams
    ]
    moved = [p for p in pauses if len(p) == 1]
    return Pings(
        streams=len(pauses),
        moved=len(moved),
        outage_s=max((p[0] for p in moved), default=0.0),
        disturbed=sum(1 for p in pauses if len(p) > 1),
    )


def _until(stream: Stream, end: float) -> Stream:
    """The stream's replies up to `end` (ping's clock)."""
    return Stream(stream.server, tuple(t for t in stream.replies if t <= end))


def _edge_at(slot: Slot, t: float, edges: dict[str, str]) -> str | None:
    public = slot.public_at(t)
    return None if public is None else edges.get(public)


def _disturbed(slot: Slot, start: float, end: float) -> bool:
    errors = [e for e in slot.errors if start <= e.at <= end]
    return bool(errors) or any(g > CONN_STALL_S for g in slot.stalled_between(start, end))


def _back(slot: Slot, window: Window, edges: dict[str, str]) -> float | None:
    """fault -> the first connection of the slot opened through another edge after it."""
    return next(
        (
            c.opened - window.fault
            for c in slot.conns
            if window.fault < c.opened <= window.heal and edges.get(c.public) != window.edge
        ),
        None,
    )


def conns(recorded: Recorded, window: Window, version: int) -> Conns:
    """The busy and idle connections of one IP version across the failure and return."""
    edges = recorded.public_edges
    slots = [s for s in recorded.slots if s.source.version == version]
    at_fault = [(s, _edge_at(s, window.fault, edges)) for s in slots]
    failed = [s for s, e in at_fault if e == window.edge]
    other = [s for s, e in at_fault if e is not None and e != window.edge]
    back = [_back(s, window, edges) for s in failed]
    returning = [
        s for s in slots if (e := _edge_at(s, window.heal, edges)) is not None and e != window.edge
    ]
    idle = [c for c in recorded.idle if c.version == version and c.edge not in (None, window.edge)]
    return Conns(
        busy=len(slots),
        on_failed=len(failed),
        back_s=tuple(sorted(b for b in back if b is not None)),
        not_back=sum(1 for b in back if b is None),
        on_other=len(other),
        disturbed_by_failure=sum(1 for s in other if _disturbed(s, window.fault, window.heal)),
        at_return=len(returning),
        disturbed_by_return=sum(1 for s in returning if _disturbed(s, window.heal, window.end)),
        idle_other=len(idle),
        idle_broken=sum(1 for c in idle if not c.answered),
    )


@dataclass(frozen=True)
class Seen:
    """What one family's traffic saw of an edge's failure and return."""

    pings: Pings
    conns: Conns


def seen(recorded: Recorded, window: Window) -> dict[str, Seen]:
    """Per family ("ipv4", "ipv6"): the pings' and the connections' figures."""
    out = {}
    for family, version in ((Family.INET, 4), (Family.INET6, 6)):
        streams = [s for s in recorded.streams if s.server.version == version]
        out[FAMILY_NAMES[family]] = Seen(
            pings(streams, window, recorded.clock_offset), conns(recorded, window, version)
        )
    return out
