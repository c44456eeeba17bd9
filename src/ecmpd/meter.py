"""Interface counters, read every second: bytes per uplink, data caps, spillover (adapter).

The daemon's one reader of /proc/net/dev: it keeps each uplink's latest counters (status,
metrics), advances the data-cap ledgers (saved in the run dir, so a restart keeps
counting) and the spillover monitor, and says when what they decide changed: an uplink
reached its cap or a new period freed it, a tier started or stopped spilling over.
Time, wall clock, the counter reader and the run dir are injected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from ecmpd.config import Config
from ecmpd.datacap import Ledger, advance, over_cap, period_start
from ecmpd.kernel.netdev import InterfaceCounters, read_interface_counters
from ecmpd.order import OrderState
from ecmpd.spillover import Member, SpillMonitor
from ecmpd.usagestore import load_ledgers, save_ledgers

log = logging.getLogger("ecmpd.meter")

METER_PERIOD = 1.0  # seconds between readings
SAVE_PERIOD = 60.0  # a crash loses at most this much of a cap's count

Reader = Callable[[Iterable[str]], InterfaceCounters]
TiersInService = Callable[[], Mapping[int, Sequence[Member]]]


class Meter:
    """See the module docstring."""

    def __init__(
        self,
        run_dir: Path,
        on_change: Callable[[str], None],
        read: Reader = read_interface_counters,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now().astimezone(),
    ) -> None:
        self.run_dir = run_dir
        self._on_change = on_change
        self._read = read
        self._clock = clock
        self._wall = wall
        self.config: Config | None = None
        self._ledgers: dict[str, Ledger] = load_ledgers(run_dir)
        self._spill: SpillMonitor | None = None
        self._saved = clock()
        self.counters: dict[str, tuple[int, int]] = {}  # uplink -> (rx bytes, tx bytes)
        self.order = OrderState()

    def use_config(self, config: Config) -> None:
        """Start (or reload): caps and spillover as this config says.

        A cap reached this period, as the run dir's ledgers say, counts from the start:
        a restarted daemon must not hand a capped uplink traffic until its first reading.
        """
        self.config = config
        wall = self._wall()
        capped = frozenset(
            u.name
            for u in config.uplinks
            if u.data_cap is not None
            and (ledger := self._ledgers.get(u.name)) is not None
            and ledger.period_start == period_start(wall, u.data_cap, u.data_cap_reset_day)
            and over_cap(ledger, u.data_cap)
        )
        self.order = replace(self.order, last_resort=capped)
        spill = config.balancer.spillover
        if spill is None:
            self._spill = None
        elif self._spill is None or self._spill.spill != spill:
            self._spill = SpillMonitor(spill)

    @property
    def ledgers(self) -> Mapping[str, Ledger]:
        """The data-cap ledgers, by uplink."""
        return self._ledgers

    @property
    def loads(self) -> Mapping[int, float | None]:
        """Each tier's load over the spillover window (empty without spillover)."""
        return self._spill.loads if self._spill is not None else {}

    def tick(self, tiers: Mapping[int, Sequence[Member]]) -> None:
        """One reading: counters, ledgers, spillover; on_change when the order changed."""
        config = self.config
        if config is None:
            return
        now = self._clock()
        by_if = self._read({u.interface for u in config.uplinks})
        self.counters = {
            u.name: (c["rx_bytes"], c["tx_bytes"])
            for u in config.uplinks
            if (c := by_if.get(u.interface)) is not None
        }
        last_resort = self._advance_caps(config)
        spilling = self._spill.observe(now, self.counters, tiers) if self._spill else frozenset()
        order = OrderState(last_resort=last_resort, spilling=spilling)
        if order != self.order:
            changed = _describe(self.order, order)
            self.order = order
            log.info("order.changed", extra={"change": changed})
            self._on_change(changed)
        if now - self._saved >= SAVE_PERIOD:
            self.save()

    def _advance_caps(self, config: Config) -> frozenset[str]:
        wall = self._wall()
        over = set()
        for u in config.uplinks:
            if u.data_cap is None or u.name not in self.counters:
                continue
            rx, tx = self.counters[u.name]
            before = self._ledgers.get(u.name)
            ledger = advance(before, rx, tx, wall, u.data_cap, u.data_cap_reset_day)
            self._ledgers[u.name] = ledger
            if over_cap(ledger, u.data_cap):
                over.add(u.name)
            if over_cap(ledger, u.data_cap) != over_cap(before, u.data_cap):
                self.save()  # a cap reached (or a new period) is kept across a restart
        return frozenset(over)

    def save(self) -> None:
        """Write the ledgers to the run dir (a failure is logged: counting goes on)."""
        self._saved = self._clock()
        if not self._ledgers:
            return
        try:
            save_ledgers(self.run_dir, self._ledgers)
        except OSError as exc:
            log.warning("usage.save_failed", extra={"error": str(exc)})

    async def run(self, tiers: TiersInService) -> None:
        """Read every METER_PERIOD until cancelled; save on the way out."""
        try:
            while True:
                try:
                    self.tick(tiers())
                except (OSError, ValueError) as exc:
                    log.warning("meter.read_failed", extra={"error": str(exc)})
                await asyncio.sleep(METER_PERIOD)
        finally:
            self.save()


def _describe(old: OrderState, new: OrderState) -> str:
    """What changed, for the reconcile's reason and the log."""
    parts = []
    for name in sorted(new.last_resort - old.last_resort):
        parts.append(f"{name} reached its data cap")
    for name in sorted(old.last_resort - new.last_resort):
        parts.append(f"{name}'s data cap reset")
    for tier in sorted(new.spilling - old.spilling):
        parts.append(f"tier {tier} spills over")
    for tier in sorted(old.spilling - new.spilling):
        parts.append(f"tier {tier} stops spilling over")
    return ", ".join(parts)
