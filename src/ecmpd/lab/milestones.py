"""Pure: when the demo's milestones happened, from what its parts recorded.

An uplink leaving or rejoining a balancer group (the group history), the interrupted
flows delivering again after a fault and their connections reset and re-established
(the traffic's ledger), the recovered uplink carrying its share again (the samples).
lab.scenario waits for each of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ecmpd.lab.samples import Conn, Sample, window

REBALANCED_FRACTION = 0.8  # the recovered uplink's share, of its weight's, that counts
REBALANCED_WINDOW_S = 1.0  # averaged over the last second of samples


@dataclass(frozen=True)
class Restore:
    """The interrupted flows' way back after a fault (each figure in seconds after the
    fault, sorted)."""

    at: float  # when the last interrupted slot delivered again (the removal: none was)
    resumed: tuple[float, ...]  # per interrupted slot: delivering again
    # Per interrupted slot whose connection was established at the fault: that connection
    # ended (reset), and the slot's next connection was established.
    reset: tuple[float, ...]
    reconnected: tuple[float, ...]
    # Whether the slot that delivered last had its connection established at the fault
    # (False: still opening, so it came back on its SYN's retransmission); None: no slot.
    last_established: bool | None = None


def first_change(
    history: Sequence[tuple[float, frozenset[str]]],
    since: float,
    holds: Callable[[frozenset[str]], bool],
) -> float | None:
    """When the group first held members that satisfy holds, at or after since."""
    return next((t for t, members in history if t >= since and holds(members)), None)


def restore(
    resumed: Mapping[int, float | None],
    conns: Sequence[Conn],
    fault: float,
    removed: float,
) -> Restore | None:
    """The flows hit by the fault delivering again (None: one is still stalled).

    resumed: per slot hit by the fault, when it delivered again after its stall (inf:
    still stalled, None: it never stalled), as Ledger.resumed gives it; conns: every
    connection so far; removed: when the failed uplink left the group.
    """
    if any(t == math.inf for t in resumed.values()):
        return None
    back = sorted(t - fault for t in resumed.values() if t is not None)
    # The interrupted slots whose connection was established at the fault (one still
    # opening ends at its SYN's retransmission: the reset it would accept needs that
    # SYN's sequence number): when that connection ended, and its successor was up.
    stalled = {slot for slot, t in resumed.items() if t is not None}
    ended = {
        c.slot: c.closed
        for c in conns
        if c.slot in stalled
        and c.connected is not None
        and c.connected <= fault
        and c.closed is not None
        and c.closed > fault
    }
    first: dict[int, float] = {}
    for conn in conns:
        if conn.slot in ended and conn.connected is not None and conn.connected > removed:
            first[conn.slot] = min(first.get(conn.slot, math.inf), conn.connected)
    last = max(stalled, key=lambda slot: resumed[slot] or 0.0, default=None)
    return Restore(
        at=fault + back[-1] if back else removed,
        resumed=tuple(back),
        reset=tuple(sorted(t - fault for t in ended.values())),
        reconnected=tuple(sorted(t - fault for t in first.values())),
        last_established=None if last is None else last in ended,
    )


def rebalanced(samples: Sequence[Sample], name: str, target: float, now: float) -> bool:
    """Whether the uplink carried at least REBALANCED_FRACTION of its target share over
    the last REBALANCED_WINDOW_S before now."""
    recent = window(samples, now - REBALANCED_WINDOW_S, now)
    return (
        bool(recent.seconds) and target > 0 and recent.share(name) >= REBALANCED_FRACTION * target
    )
