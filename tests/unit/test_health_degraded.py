"""The soft `degraded` signal: its enforced table, hysteresis, and how the tracker feeds it."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecmpd.config import CheckConfig
from ecmpd.health.degraded import TRANSITIONS, DegradedTracker, Grade, IllegalGrade
from ecmpd.health.fsm import HealthState, HealthTracker

G = Grade
GW = IPv4Address("192.0.2.1")
LEGAL = {(old, new) for old, news in TRANSITIONS.items() for new in news}


@pytest.mark.parametrize(
    ("old", "new"), sorted(set(itertools.product(G, G)) - LEGAL), ids=lambda g: str(g)
)
def test_moves_outside_the_table_are_refused(old: Grade, new: Grade) -> None:
    tracker = DegradedTracker(CheckConfig(degraded_loss=0.05))
    tracker._grade = old
    with pytest.raises(IllegalGrade):
        tracker._move(0.0, new, "test")


def test_entering_takes_down_after_rounds_and_leaving_up_after() -> None:
    tracker = DegradedTracker(CheckConfig(degraded_rtt=0.05, down_after=3, up_after=2))
    over = "rtt over"
    grades = [
        (tracker.on_round(t, verdict), tracker.grade)[1]
        for t, verdict in enumerate([over, over, None, over, over, over, None, over, None, None])
    ]
    assert grades == [
        G.DEGRADING,
        G.DEGRADING,
        G.CLEAR,  # a good round while counting: back to clear, count restarts
        G.DEGRADING,
        G.DEGRADING,
        G.DEGRADED,
        G.RECOVERING,
        G.DEGRADED,  # a bad round while recovering: degraded again
        G.RECOVERING,
        G.CLEAR,
    ]
    assert [g.degraded for g in grades] == [False] * 5 + [True] * 4 + [False]


def test_counts_of_one_move_at_once() -> None:
    tracker = DegradedTracker(CheckConfig(degraded_rtt=0.05, down_after=1, up_after=1))
    change = tracker.on_round(0.0, "over")
    assert change is not None and (change.old, change.new) == (G.CLEAR, G.DEGRADED)
    change = tracker.on_round(1.0, None)
    assert change is not None and change.new is G.CLEAR


@settings(max_examples=300, deadline=None)
@given(
    verdicts=st.lists(st.booleans(), max_size=60),
    enter=st.integers(1, 5),
    leave=st.integers(1, 5),
)
def test_degraded_matches_a_plain_streak_model(
    verdicts: list[bool], enter: int, leave: int
) -> None:
    """Degraded after `enter` bad rounds in a row, clear again after `leave` good in a row."""
    tracker = DegradedTracker(CheckConfig(degraded_rtt=0.05, down_after=enter, up_after=leave))
    degraded, streak, last = False, 0, None
    for t, bad in enumerate(verdicts):
        tracker.on_round(float(t), "over" if bad else None)
        streak = streak + 1 if bad == last else 1
        last = bad
        if bad and streak >= enter:
            degraded = True
        if not bad and streak >= leave:
            degraded = False
        assert tracker.degraded == degraded


def _round(tracker: HealthTracker, t: float, rtt: float | None) -> None:
    tracker.on_round(t, {GW: rtt})


def test_a_slow_uplink_stays_in_service_but_degraded_and_a_failed_one_goes_down() -> None:
    check = CheckConfig(degraded_rtt=0.05, max_rtt=0.2, down_after=2, up_after=2)
    tracker = HealthTracker("isp-a", check, [GW], now=0.0, window=4)
    for t in range(4):
        _round(tracker, t, 0.01)
    assert tracker.state is HealthState.UP and not tracker.degraded
    for t in range(4, 8):
        _round(tracker, t, 0.1)  # the window median passes 50 ms, not 200 ms
    assert tracker.state is HealthState.UP and tracker.in_service and tracker.degraded
    assert tracker.grade is G.DEGRADED
    for t in range(8, 12):
        _round(tracker, t, 0.3)
    assert tracker.state is HealthState.DOWN and tracker.degraded
    for t in range(12, 20):
        _round(tracker, t, 0.01)
    assert tracker.state is HealthState.UP and not tracker.degraded


def test_the_round_that_changes_the_grade_reports_it_once() -> None:
    check = CheckConfig(degraded_loss=0.2, down_after=1, up_after=1)
    tracker = HealthTracker("isp-a", check, [GW], now=0.0, window=4)
    _round(tracker, 0, 0.01)
    assert tracker.grade_change is None
    _round(tracker, 1, None)
    change = tracker.grade_change
    assert change is not None and change.new is G.DEGRADED
    _round(tracker, 2, 0.01)  # answered, but the window still holds 1 lost of 3: 33% > 20%
    assert tracker.grade_change is None and tracker.degraded
    for t in range(3, 6):
        _round(tracker, t, 0.01)
    assert not tracker.degraded  # 1 lost of 4 is still over; the loss left the window


def test_without_soft_limits_an_uplink_is_never_degraded() -> None:
    tracker = HealthTracker("isp-a", CheckConfig(max_rtt=0.2), [GW], now=0.0, window=4)
    for t in range(6):
        _round(tracker, t, 0.19)
    assert tracker.grade is G.CLEAR and tracker.grade_change is None
