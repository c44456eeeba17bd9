"""Pure: when a tier is loaded enough that new connections should also use the next tier.

A tier's load is the bytes its in-service uplinks moved over the last `for` seconds
(each uplink's busier direction, from interface counters), as a fraction of their
summed bandwidth. Spilling starts when that average reaches `above` and stops when it
falls to `below` (hysteresis: in between, nothing changes). Time is passed in.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ecmpd.config.schema import SpilloverConfig


class Spill(enum.Enum):
    """Whether a tier spills over into the next one."""

    NORMAL = "normal"
    SPILLING = "spilling"


class Level(enum.Enum):
    """A load judged against the thresholds."""

    HIGH = "high"  # at or above `above`
    MIDDLE = "middle"
    LOW = "low"  # at or below `below`
    UNKNOWN = "unknown"  # not measured over a whole window yet


TRANSITIONS: Mapping[tuple[Spill, Level], Spill] = {
    (Spill.NORMAL, Level.HIGH): Spill.SPILLING,
    (Spill.NORMAL, Level.MIDDLE): Spill.NORMAL,
    (Spill.NORMAL, Level.LOW): Spill.NORMAL,
    (Spill.NORMAL, Level.UNKNOWN): Spill.NORMAL,
    (Spill.SPILLING, Level.HIGH): Spill.SPILLING,
    (Spill.SPILLING, Level.MIDDLE): Spill.SPILLING,
    (Spill.SPILLING, Level.LOW): Spill.NORMAL,
    (Spill.SPILLING, Level.UNKNOWN): Spill.SPILLING,
}


@dataclass(frozen=True)
class Member:
    """An uplink of a tier in service: its name and configured bandwidth (bits/s)."""

    name: str
    bandwidth: int


Counters = Mapping[str, tuple[int, int]]  # uplink -> (rx bytes, tx bytes)


def level(load: float | None, spill: SpilloverConfig) -> Level:
    """Where a load stands against the thresholds."""
    if load is None:
        return Level.UNKNOWN
    if load >= spill.above:
        return Level.HIGH
    if load <= spill.below:
        return Level.LOW
    return Level.MIDDLE


class SpillMonitor:
    """Keeps the readings of the last `for` seconds and each tier's spill state."""

    def __init__(self, spill: SpilloverConfig) -> None:
        self.spill = spill
        self._readings: deque[tuple[float, Counters]] = deque()
        self._state: dict[int, Spill] = {}
        self.loads: dict[int, float | None] = {}

    def observe(
        self, at: float, counters: Counters, tiers: Mapping[int, Sequence[Member]]
    ) -> frozenset[int]:
        """Take a reading; the tiers spilling over after it."""
        self._readings.append((at, dict(counters)))
        # Keep one reading at or before the window's start, so the window is whole.
        while len(self._readings) > 1 and self._readings[1][0] <= at - self.spill.for_:
            self._readings.popleft()
        for tier, members in tiers.items():
            load = self.load(members)
            self.loads[tier] = load
            state = self._state.get(tier, Spill.NORMAL)
            self._state[tier] = TRANSITIONS[(state, level(load, self.spill))]
        for tier in set(self._state) - set(tiers):
            del self._state[tier]  # no uplink in service: nothing to spill from
        return frozenset(t for t, s in self._state.items() if s is Spill.SPILLING)

    def load(self, members: Sequence[Member]) -> float | None:
        """The members' load over the window, None until the window is whole."""
        (start, first), (end, last) = self._readings[0], self._readings[-1]
        elapsed = end - start
        capacity = sum(m.bandwidth for m in members)
        if elapsed < self.spill.for_ * 0.999 or not capacity:
            return None
        moved = 0
        for m in members:
            if m.name not in first or m.name not in last:
                return None
            grown = [b - a for a, b in zip(first[m.name], last[m.name], strict=True)]
            if min(grown) < 0:
                return None  # counters reset (a new interface): judge the next window
            moved += max(grown)
        return moved * 8 / elapsed / capacity
