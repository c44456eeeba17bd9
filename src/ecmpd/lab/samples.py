"""What the lab's traffic records: connections, moves, stalls, rate samples and windows.

Plain values (the Traffic generator in lab.traffic fills them), so the demo's summary
reads them without the machinery.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address


@dataclass
class Conn:
    """One TCP connection of a flow slot."""

    slot: int
    serial: int
    client: IPv4Address
    server: IPv4Address
    sport: int
    opened: float
    lifetime: float  # once connected, how long it sends before its slot opens the next
    uplink: str | None = None  # the router's route lookup when it opened
    nat_uplink: str | None = None  # the NAT source address the sink saw
    path: str | None = None  # the latest route lookup
    connected: float | None = None
    closed: float | None = None
    error: str | None = None
    sent: int = 0

    def uplinks(self) -> set[str]:
        """Every uplink it was seen on."""
        return {u for u in (self.uplink, self.nat_uplink, self.path) if u is not None}


@dataclass(frozen=True)
class Move:
    """A live connection the router's kernel started routing by another uplink."""

    t: float
    slot: int
    serial: int
    old: str
    new: str
    healthy: bool  # the old uplink was still in the balancer group: this must never happen


@dataclass(frozen=True)
class Stall:
    """A slot that received nothing from start to end (seconds, monotonic)."""

    slot: int
    start: float
    end: float


@dataclass(frozen=True)
class Sample:
    """One sample: rates over the interval that ends at t."""

    t: float
    tx_mbit: dict[str, float]  # router -> ISP, from the router's counters
    rx_mbit: dict[str, float]  # ISP -> router
    delivered_mbit: dict[str, float]  # at the sinks, by the NAT source address seen
    flows: dict[str, int]  # live connections by their latest route lookup
    members: frozenset[str] | None  # the balancer group's uplinks, read after the lookups


def mbit(nbytes: int, seconds: float) -> float:
    return nbytes * 8 / 1e6 / seconds if seconds > 0 else 0.0


@dataclass
class Window:
    """Mean rates over a stretch of samples."""

    tx_mbit: dict[str, float] = field(default_factory=dict)
    delivered_mbit: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_mbit(self) -> float:
        """The uplinks' summed transmit rate."""
        return sum(self.tx_mbit.values())

    def share(self, uplink: str) -> float:
        """The uplink's fraction of the transmitted bytes."""
        total = self.total_mbit
        return self.tx_mbit.get(uplink, 0.0) / total if total > 0 else 0.0


def window(samples: Sequence[Sample], start: float, end: float) -> Window:
    """Mean rates of the samples whose interval ends in (start, end], weighted by interval."""
    # Weighted by each sample's own interval: intervals stretch when the machine is busy.
    pairs = [(b.t - a.t, b) for a, b in itertools.pairwise(samples) if start < b.t <= end]
    seconds = sum(dt for dt, _ in pairs)
    if not pairs or seconds <= 0:
        return Window()
    names = list(pairs[0][1].tx_mbit)

    def mean(pick: Callable[[Sample], dict[str, float]]) -> dict[str, float]:
        return {n: sum(pick(s).get(n, 0.0) * dt for dt, s in pairs) / seconds for n in names}

    return Window(mean(lambda s: s.tx_mbit), mean(lambda s: s.delivered_mbit), seconds)
