"""Pure: an uplink's data-cap ledger — bytes counted this period from interface counters.

Interface counters start at zero whenever the interface is created (a modem replugged,
a PPP session redialled) and the daemon restarts; the ledger keeps the last readings
it saw and adds what grew since, so the count survives both once persisted.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ecmpd.model import CapPeriod, DataCap

DAYS_PER_WEEK = 7


@dataclass(frozen=True)
class Ledger:
    """Bytes sent plus received by one uplink in the period that began at `period_start`."""

    period_start: datetime
    used: int = 0
    last_rx: int | None = None  # the interface counters at the last reading
    last_tx: int | None = None


def period_start(now: datetime, cap: DataCap, reset_day: int | None) -> datetime:
    """When the period holding `now` began: midnight of the reset day (in now's timezone).

    A monthly reset day past a month's end means its last day (31 -> 30 April); a
    weekly one is an ISO weekday (1 = Monday).
    """
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    day = reset_day or 1
    if cap.period is CapPeriod.DAY:
        return midnight
    if cap.period is CapPeriod.WEEK:
        back = (now.isoweekday() - day) % DAYS_PER_WEEK
        return midnight - timedelta(days=back)
    this_month = midnight.replace(day=min(day, _days_in(now.year, now.month)))
    if this_month <= now:
        return this_month
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return midnight.replace(year=year, month=month, day=min(day, _days_in(year, month)))


def _days_in(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def advance(
    ledger: Ledger | None, rx: int, tx: int, now: datetime, cap: DataCap, reset_day: int | None
) -> Ledger:
    """The ledger after a reading of the interface's counters at `now`.

    A counter below its last reading was reset (a new interface): all of it is new.
    A new period starts from zero, counting only what grew since the last reading.
    """
    start = period_start(now, cap, reset_day)
    if ledger is None:
        # The first reading ever: what the counters held before is of unknown age.
        return Ledger(start, 0, rx, tx)
    grown = _growth(ledger.last_rx, rx) + _growth(ledger.last_tx, tx)
    used = grown if start != ledger.period_start else ledger.used + grown
    return replace(ledger, period_start=start, used=used, last_rx=rx, last_tx=tx)


def _growth(last: int | None, now: int) -> int:
    if last is None or now < last:
        return now
    return now - last


def over_cap(ledger: Ledger | None, cap: DataCap | None) -> bool:
    """Whether the uplink has used its cap this period."""
    return cap is not None and ledger is not None and ledger.used >= cap.limit
