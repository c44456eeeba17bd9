"""Uplink health as an enforced state machine over probe rounds, in virtual time.

Pure: no sockets, no clock. The caller (the scheduler) keeps this contract, which
`detection_time` and `recovery_time` rely on:

* it launches a round (one probe per target) and then waits `next_interval(interval)`,
  read at launch, before launching the next one, so rounds may overlap when
  timeout > interval;
* it reports a round with `on_round` once every probe was answered or timed out, and
  never before the round launched just before it was reported (send order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from ecmpd.config import CheckConfig
from ecmpd.health.degraded import DegradedTracker, Grade, GradeChange, enabled
from ecmpd.health.window import (
    ProbeWindow,
    Quality,
    Target,
    TargetStats,
    default_window,
    loss_over,
    pooled_quality,
    rounds_to_clear,
)

__all__ = [
    "FAST_PROBE_FACTOR",
    "TRANSITIONS",
    "HealthState",
    "HealthTracker",
    "IllegalTransition",
    "RoundResults",
    "Target",
    "TargetStats",
    "Transition",
    "check_transition",
    "detection_time",
    "recovery_time",
    "rounds_to_recover",
]

RoundResults = Mapping[Target, float | None]  # target -> RTT in seconds, None: lost


class HealthState(StrEnum):
    """Where an uplink stands; the values are what hooks and `ecmpd status` show."""

    UNKNOWN = "unknown"
    UP = "up"
    FALLING = "falling"
    DOWN = "down"
    RISING = "rising"

    @property
    def in_service(self) -> bool:
        """Whether traffic may use the uplink in this state."""
        return self in _IN_SERVICE


# unknown is in service so that a restart adopting a healthy kernel changes nothing;
# falling and rising keep the service they had until the count completes (hysteresis).
_IN_SERVICE: Final = frozenset({HealthState.UNKNOWN, HealthState.UP, HealthState.FALLING})

_S = HealthState
# Every move the tracker may make; anything else raises IllegalTransition. up -> down
# skips falling only for hard events (carrier loss, a forced verdict) and for down_after = 1.
# (Drain is not health: the daemon keeps drained uplinks out whatever their state.)
TRANSITIONS: Final[Mapping[HealthState, frozenset[HealthState]]] = MappingProxyType(
    {
        _S.UNKNOWN: frozenset({_S.UP, _S.DOWN}),
        _S.UP: frozenset({_S.FALLING, _S.DOWN}),
        _S.FALLING: frozenset({_S.UP, _S.DOWN}),
        _S.DOWN: frozenset({_S.RISING}),
        _S.RISING: frozenset({_S.UP, _S.DOWN}),
    }
)

# Undecided states probe at this fraction of the interval, to settle sooner (ExaBGP's
# fast-interval while rising/falling); unknown too, so a restart into an outage
# withdraws the dead uplink quickly.
FAST_PROBE_FACTOR: Final = 0.5
_FAST_STATES: Final = frozenset({_S.UNKNOWN, _S.FALLING, _S.RISING})


class IllegalTransition(Exception):
    """A move the transition table does not allow."""

    def __init__(self, old: HealthState, new: HealthState) -> None:
        super().__init__(f"illegal health transition {old} -> {new}")
        self.old = old
        self.new = new


def check_transition(old: HealthState, new: HealthState) -> None:
    """Raise IllegalTransition unless TRANSITIONS allows old -> new."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(old, new)


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of one uplink's health."""

    uplink: str
    old: HealthState
    new: HealthState
    at: float
    reason: str


def rounds_to_recover(check: CheckConfig) -> int:
    """Good rounds from down to up: up_after, but at least 2 (down must pass through rising)."""
    return max(2, check.up_after)


class HealthTracker:
    """The health of one uplink in one address family, fed probe rounds and carrier events."""

    def __init__(
        self,
        uplink: str,
        check: CheckConfig,
        targets: Sequence[Target],
        now: float,
        window: int | None = None,
    ) -> None:
        if not targets:
            raise ValueError("a health tracker needs a target (the gateway when none is set)")
        if len(set(targets)) != len(targets):
            raise ValueError(f"duplicate health check targets: {list(targets)}")
        self.uplink = uplink
        self._check = check
        size = default_window(check) if window is None else window
        self._windows = {t: ProbeWindow(t, size) for t in targets}
        # min_up is validated against all targets; one family may hold fewer of them,
        # and then every target of that family must answer.
        self._quorum = min(check.min_up, len(targets))
        self._state = HealthState.UNKNOWN
        self._since = now
        self._reason = "starting"
        self._carrier = True
        self._bad = 0  # consecutive bad rounds
        self._good = 0  # consecutive good rounds
        self._soft = DegradedTracker(check) if enabled(check) else None
        # The grade change the last round made (None: none), for the scheduler to pass on.
        self.grade_change: GradeChange | None = None

    @property
    def state(self) -> HealthState:
        """The current state."""
        return self._state

    @property
    def since(self) -> float:
        """When the current state was entered (construction time for unknown)."""
        return self._since

    @property
    def reason(self) -> str:
        """Why the current state was entered."""
        return self._reason

    @property
    def in_service(self) -> bool:
        """Whether traffic may use this uplink now."""
        return self._state.in_service

    @property
    def grade(self) -> Grade:
        """Against the soft limits (always clear without degraded_loss/degraded_rtt)."""
        return Grade.CLEAR if self._soft is None else self._soft.grade

    @property
    def grading(self) -> bool:
        """Whether the check has soft limits (degraded_loss, degraded_rtt) to grade by."""
        return self._soft is not None

    @property
    def degraded(self) -> bool:
        """Whether the uplink is over its soft limits (its MPTCP endpoints turn backup)."""
        return self._soft is not None and self._soft.degraded

    @property
    def carrier(self) -> bool:
        """The last carrier reported (assumed present until told otherwise)."""
        return self._carrier

    def stats(self) -> list[TargetStats]:
        """Per-target statistics, in target order."""
        return [w.stats() for w in self._windows.values()]

    def overall(self) -> Quality:
        """Loss and RTT over all targets' windows pooled."""
        return pooled_quality(self._windows.values())

    def next_interval(self, base_interval: float) -> float:
        """How long to wait before the next round: shorter while unknown, falling or rising."""
        if self._state in _FAST_STATES:
            return base_interval * FAST_PROBE_FACTOR
        return base_interval

    def on_round(self, now: float, results: RoundResults) -> Transition | None:
        """Account one probe round (a missing target counts as lost); return any change."""
        self.grade_change = None
        strangers = [t for t in results if t not in self._windows]
        if strangers:
            raise ValueError(f"results for targets this tracker does not probe: {strangers}")
        if not self._carrier:
            # Probes cannot leave without a link: they say nothing about the path, and
            # counting them would keep the loss window full long after the cable is back.
            return None
        for target, window in self._windows.items():
            window.record(results.get(target))
        if self._soft is not None:
            good, over = self._judge(results, soft=True)
            self.grade_change = self._soft.on_round(now, None if good else over)
        good, why = self._judge(results)
        return self._count_good(now, why) if good else self._count_bad(now, why)

    def on_carrier(self, now: float, carrier: bool) -> Transition | None:
        """Carrier loss takes the uplink down at once; its return lets probing recover it."""
        changed = carrier != self._carrier
        self._carrier = carrier
        if changed:
            # Streaks never span a carrier change: recovery counts only rounds after it.
            self._good = self._bad = 0
        if carrier or self._state is HealthState.DOWN:
            return None
        return self._move(now, HealthState.DOWN, "carrier lost")

    def force(self, now: float, state: HealthState, reason: str) -> Transition:
        """Move to `state` outside the round logic, still through the table.

        For verdicts that come from the kernel rather than from probes: a restart adopting
        an uplink the balancer already left.
        """
        transition = self._move(now, state, reason)
        self._good = self._bad = 0
        return transition

    def _judge(self, results: RoundResults, soft: bool = False) -> tuple[bool, str]:
        """Whether this (already recorded) round is good, and why in words.

        `soft`: against degraded_loss/degraded_rtt instead of max_loss/max_rtt.
        """
        answered = [t for t in self._windows if results.get(t) is not None]
        counted = f"{len(answered)}/{len(self._windows)} targets answered"
        if len(answered) < self._quorum:
            return False, f"{counted}, min_up {self._quorum}"
        # A target counts towards the quorum only if its window is within the limits too,
        # so one dead or lossy target among several does not take the uplink down.
        failures = [f for t in answered if (f := self._limit_failure(self._windows[t], soft))]
        if len(answered) - len(failures) >= self._quorum:
            return True, counted
        return False, failures[0]

    def _limit_failure(self, window: ProbeWindow, soft: bool = False) -> str | None:
        """Which window limit (max_loss, max_rtt, or the soft ones) this target exceeds."""
        check = self._check
        if soft:
            max_loss, max_rtt = check.degraded_loss, check.degraded_rtt
            loss_name, rtt_name = "degraded_loss", "degraded_rtt"
        else:
            max_loss, max_rtt = check.max_loss, check.max_rtt
            loss_name, rtt_name = "max_loss", "max_rtt"
        if max_loss is not None and loss_over(window.lost, window.size, max_loss):
            loss = window.lost / window.size
            return f"{window.target}: window loss {loss:.0%} > {loss_name} {max_loss:.0%}"
        if max_rtt is not None:
            # The median, not the mean: one slow reply (an ICMP answer deprioritised by a
            # busy router) must not flip the verdict; a sustained rise moves it.
            median = window.quality().rtt_median
            if median is not None and median > max_rtt:
                return (
                    f"{window.target}: window median rtt {median * 1000:.0f}ms"
                    f" > {rtt_name} {max_rtt * 1000:.0f}ms"
                )
        return None

    def _count_good(self, now: float, why: str) -> Transition | None:
        """Advance on a good round."""
        self._bad = 0
        self._good += 1
        need = rounds_to_recover(self._check)
        match self._state:
            case HealthState.UNKNOWN:
                return self._move(now, HealthState.UP, f"first good round: {why}")
            case HealthState.FALLING:
                return self._move(now, HealthState.UP, f"good round while falling: {why}")
            case HealthState.DOWN:
                return self._move(now, HealthState.RISING, f"good round 1/{need}: {why}")
            case HealthState.RISING if self._good >= need:
                return self._move(now, HealthState.UP, f"{self._good} consecutive good rounds")
        return None

    def _count_bad(self, now: float, why: str) -> Transition | None:
        """Advance on a bad round."""
        self._good = 0
        self._bad += 1
        down_after = self._check.down_after
        if self._state is HealthState.DOWN:
            return None
        if self._state is HealthState.RISING:
            return self._move(now, HealthState.DOWN, f"bad round while rising: {why}")
        if self._bad >= down_after:
            return self._move(now, HealthState.DOWN, f"{self._bad} consecutive bad rounds: {why}")
        if self._state is HealthState.UP:
            return self._move(now, HealthState.FALLING, f"bad round 1/{down_after}: {why}")
        return None  # unknown or falling: still counting

    def _move(self, now: float, new: HealthState, reason: str) -> Transition:
        """The only place the state changes: checked against TRANSITIONS first."""
        check_transition(self._state, new)
        transition = Transition(self.uplink, self._state, new, now, reason)
        self._state, self._since, self._reason = new, now, reason
        return transition


def _settle_time(check: CheckConfig, discarded: int, counted: int) -> float:
    """Worst case from an event until `counted` rounds are judged, after `discarded` others."""
    base, timeout = check.interval, check.timeout
    fast = base * FAST_PROBE_FACTOR
    # The first round launched after the event starts less than one interval after it;
    # the discarded rounds follow at the base interval (the state does not change yet).
    first = base + discarded * base
    # The first counted round is judged up to one timeout after its launch; every round
    # launched until then still waits the base interval (ties counted slow: worst case).
    # The relative epsilon keeps 0.3 / 0.1 = 2.9999999999999996 from counting as 2.
    slow = math.floor(timeout / base * (1 + 1e-9)) + 1
    gaps = counted - 1
    return first + min(gaps, slow) * base + max(0, gaps - slow) * fast + timeout


def detection_time(check: CheckConfig) -> float:
    """Worst-case seconds from a total failure to the uplink leaving service (down).

    With I = interval, F = FAST_PROBE_FACTOR * I, T = timeout, d = down_after and
    s = floor(T / I) + 1 (the rounds launched before the first failed one is judged):
    I + min(d - 1, s) * I + max(0, d - 1 - s) * F + T.
    """
    return _settle_time(check, 0, check.down_after)


def recovery_time(check: CheckConfig, window: int | None = None) -> float:
    """Worst-case seconds from a full repair to the uplink being back in service (up).

    As detection_time with u = max(2, up_after) good rounds, plus, when max_loss is set,
    the rounds a window full of losses needs to drain to max_loss, at the base interval:
    the worst case after any outage longer than max_loss of the window. Assumes the repaired
    path answers within max_rtt.
    """
    discarded = 0
    if check.max_loss is not None:
        size = default_window(check) if window is None else window
        discarded = rounds_to_clear(size, check.max_loss) - 1
    return _settle_time(check, discarded, rounds_to_recover(check))
