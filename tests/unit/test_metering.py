"""Data caps, standby probe budgets and spillover: pure logic in virtual time."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ecmpd.config import CheckConfig
from ecmpd.config.schema import SpilloverConfig
from ecmpd.config.units import parse_probe_budget
from ecmpd.datacap import Ledger, advance, over_cap, period_start
from ecmpd.metering import round_bytes, standby_interval
from ecmpd.model import CapPeriod, DataCap, Family
from ecmpd.spillover import TRANSITIONS, Level, Member, Spill, SpillMonitor, level
from ecmpd.usagestore import USAGE_FILE, load_ledgers, save_ledgers

TZ = timezone(timedelta(hours=2))
MONTH = DataCap(20 * 10**9, CapPeriod.MONTH)
WEEK = DataCap(10**9, CapPeriod.WEEK)
DAY = DataCap(10**9, CapPeriod.DAY)


def at(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=TZ)


@pytest.mark.parametrize(
    ("now", "cap", "reset", "start"),
    [
        (at(3, 20), MONTH, 15, at(3, 15, 0)),
        (at(3, 10), MONTH, 15, at(2, 15, 0)),
        (at(1, 10), MONTH, 15, datetime(2024, 12, 15, tzinfo=TZ)),
        (at(4, 30), MONTH, 31, at(4, 30, 0)),  # April has no 31st: its last day
        (at(4, 29), MONTH, 31, at(3, 31, 0)),
        (at(3, 1, 0), MONTH, None, at(3, 1, 0)),  # the reset instant begins the period
        (at(3, 19), WEEK, 1, at(3, 17, 0)),  # Wednesday -> Monday before
        (at(3, 17, 0), WEEK, 1, at(3, 17, 0)),
        (at(3, 16), WEEK, 1, at(3, 10, 0)),  # Sunday -> the Monday six days before
        (at(3, 19, 23), DAY, None, at(3, 19, 0)),
    ],
)
def test_period_start(now: datetime, cap: DataCap, reset: int | None, start: datetime) -> None:
    assert period_start(now, cap, reset) == start


def test_ledger_counts_growth_across_counter_resets_and_periods() -> None:
    ledger = advance(None, 5_000, 1_000, at(3, 20), MONTH, 1)
    assert ledger.used == 0  # what the counters held before the first reading is not counted
    ledger = advance(ledger, 8_000, 2_000, at(3, 21), MONTH, 1)
    assert ledger.used == 4_000
    ledger = advance(ledger, 500, 100, at(3, 22), MONTH, 1)  # interface recreated
    assert ledger.used == 4_600
    ledger = advance(ledger, 1_500, 600, at(4, 1, 0), MONTH, 1)  # a new month
    assert (ledger.period_start, ledger.used) == (at(4, 1, 0), 1_500)
    assert not over_cap(ledger, MONTH) and not over_cap(None, MONTH)
    assert over_cap(Ledger(at(4, 1, 0), 20 * 10**9), MONTH)
    assert not over_cap(Ledger(at(4, 1, 0), 20 * 10**9), None)


def test_ledgers_survive_a_restart(tmp_path: Path) -> None:
    ledgers = {"lte": Ledger(at(3, 1, 0), 123, 456, 789), "sat": Ledger(at(3, 2, 0))}
    save_ledgers(tmp_path, ledgers)
    assert load_ledgers(tmp_path) == ledgers
    assert load_ledgers(tmp_path / "missing") == {}
    (tmp_path / USAGE_FILE).write_text("{not json", encoding="utf-8")
    assert load_ledgers(tmp_path) == {}


def test_probe_budget_units() -> None:
    assert parse_probe_budget("1KB/min") == 1000
    assert parse_probe_budget("60KB/h") == 1000
    assert parse_probe_budget("2B/s") == 120
    with pytest.raises(ValueError, match="expected bytes per time like '1KB/min'"):
        parse_probe_budget("1KB")


def test_standby_interval_keeps_within_the_budget() -> None:
    icmp = CheckConfig()
    # An echo of 16 bytes of payload: 44 bytes each way in IPv4, 64 in IPv6.
    assert round_bytes(icmp, {Family.INET: 2}) == 176
    assert round_bytes(icmp, {Family.INET: 2, Family.INET6: 2}) == 176 + 256
    interval = standby_interval(icmp, {Family.INET: 2})
    # 5 rounds of 176 bytes fit 1000 bytes: 12 s apart, so no minute holds a 6th.
    assert interval == 12.0
    assert math.floor(60 / interval) * 176 <= 1000
    # A budget below one round: one round per 176 / 100 minutes.
    sparse = CheckConfig(standby_budget=100.0)
    assert standby_interval(sparse, {Family.INET: 2}) == pytest.approx(105.6)
    tcp = CheckConfig(method="tcp:443", standby_budget=10_000.0)
    assert round_bytes(tcp, {Family.INET: 1}) == 4 * 20 + 132
    # A generous budget never probes faster than the normal interval.
    rich = CheckConfig(standby_budget=10**9)
    assert standby_interval(rich, {Family.INET: 1}) == rich.interval


SPILL = SpilloverConfig(above=0.9, below=0.7, for_=5.0)
TIER = {1: [Member("fiber", 80_000_000), Member("cable", 80_000_000)]}  # 20 MB/s in all


def feed(monitor: SpillMonitor, start: int, seconds: int, rate: float) -> frozenset[int]:
    """One reading a second from start on, each uplink receiving `rate` bytes/s meanwhile."""
    spilling: frozenset[int] = frozenset()
    for t in range(start, start + seconds + 1):
        moved = MOVED.setdefault(id(monitor), [0])
        moved[0] += int(rate) if t else 0
        counters = {"fiber": (moved[0], moved[0] // 10), "cable": (moved[0], 0)}
        spilling = monitor.observe(t, counters, TIER)
    return spilling


MOVED: dict[int, list[int]] = {}


def test_spillover_hysteresis() -> None:
    monitor = SpillMonitor(SPILL)
    # 95% of 10 MB/s each, but not yet for a whole window: unknown, nothing spills.
    assert feed(monitor, 0, 3, 9.5e6) == frozenset()
    assert monitor.loads[1] is None
    assert feed(monitor, 4, 3, 9.5e6) == {1}  # t=7: the window [2, 7] is whole
    assert monitor.loads[1] == pytest.approx(0.95)
    # 80%: between the thresholds, it keeps spilling.
    assert feed(monitor, 8, 6, 8e6) == {1}
    # 60% over a whole window: it stops.
    assert feed(monitor, 15, 6, 6e6) == frozenset()


def test_spill_table_is_complete() -> None:
    assert set(TRANSITIONS) == {(s, lv) for s in Spill for lv in Level}
    assert level(None, SPILL) is Level.UNKNOWN
    assert level(0.9, SPILL) is Level.HIGH and level(0.7, SPILL) is Level.LOW


def test_counter_reset_is_judged_next_window() -> None:
    monitor = SpillMonitor(SPILL)
    monitor.observe(0, {"fiber": (10**9, 0), "cable": (0, 0)}, TIER)
    monitor.observe(5, {"fiber": (10, 0), "cable": (10**8, 0)}, TIER)
    assert monitor.loads[1] is None
