"""lab.milestones: when the demo's uplink left and rejoined, its flows came back, it
carried its share again, computed from hand-made records."""

from __future__ import annotations

import math

import pytest

from ecmpd.lab.milestones import REBALANCED_FRACTION, Restore, first_change, rebalanced, restore
from ecmpd.lab.samples import Sample
from tests.unit.fixtures import traffic_conn

FAULT, REMOVED = 100.0, 100.5
AB = frozenset({"a", "b"})


def test_first_change_is_the_first_entry_since_that_holds() -> None:
    history = [(90.0, AB), (100.2, frozenset({"a"})), (101.0, frozenset()), (102.0, AB)]
    assert first_change(history, FAULT, lambda m: "b" not in m) == 100.2
    assert first_change(history, 100.3, lambda m: "b" not in m) == 101.0
    assert first_change(history, FAULT, lambda m: "b" in m) == 102.0
    assert first_change(history, 90.0, lambda m: "b" in m) == 90.0  # at since counts
    assert first_change(history, 102.5, lambda m: True) is None
    assert first_change([], 0.0, lambda m: True) is None


def test_restore_waits_while_a_slot_is_still_stalled() -> None:
    assert restore({0: 101.0, 1: math.inf}, [], FAULT, REMOVED) is None


def test_restore_times_resets_and_reconnects_of_established_interrupted_slots() -> None:
    conns = [
        # slot 0: established at the fault, reset at +0.6; two later connections
        traffic_conn(0, 1, connected=95.0, closed=100.6, error="ECONNRESET"),
        traffic_conn(0, 2, connected=100.9),
        traffic_conn(0, 3, connected=101.3),
        traffic_conn(0, 4, connected=100.4),  # before the removal: not its reconnection
        # slot 1: still opening at the fault (its SYN retransmission ends it): no reset
        traffic_conn(1, 5, closed=101.0, error="ETIMEDOUT"),
        traffic_conn(1, 6, connected=101.2),
        # slot 2: never stalled, though its connection ended after the fault
        traffic_conn(2, 7, connected=95.0, closed=100.7),
        # slot 3: interrupted, but its connection closed before the fault
        traffic_conn(3, 8, connected=95.0, closed=99.0),
    ]
    found = restore({0: 101.2, 1: 100.8, 2: None, 3: 101.0}, conns, FAULT, REMOVED)
    assert found is not None
    assert found.at == 101.2
    assert found.resumed == pytest.approx((0.8, 1.0, 1.2))  # sorted, after the fault
    assert found.reset == pytest.approx((0.6,))
    assert found.reconnected == pytest.approx((0.9,))  # the first after the removal
    assert found.last_established is True  # slot 0, the last back, was established


def test_restore_without_interrupted_flows_is_the_removal() -> None:
    assert restore({4: None}, [traffic_conn(4, 1, connected=95.0)], FAULT, REMOVED) == Restore(
        at=REMOVED, resumed=(), reset=(), reconnected=()
    )


def sample(t: float, a: float, b: float) -> Sample:
    tx = {"a": a, "b": b}
    return Sample(t, tx, tx, tx, {"a": 1, "b": 1}, None)


def test_rebalanced_once_the_last_second_carries_enough_of_the_target() -> None:
    target = 0.5
    enough = REBALANCED_FRACTION * target  # b's share of a + b = 100
    low = [sample(100.0 + k * 0.2, 100 * (1 - enough) + 1, 100 * enough - 1) for k in range(6)]
    high = [sample(100.0 + k * 0.2, 100 * (1 - enough), 100 * enough) for k in range(6)]
    assert not rebalanced(low, "b", target, 101.0)
    assert rebalanced(high, "b", target, 101.0)
    assert not rebalanced(high, "b", 0.0, 101.0)  # no target: out of the balancer
    assert not rebalanced(high, "b", target, 103.0)  # no samples in the last second
    assert not rebalanced([], "b", target, 101.0)
