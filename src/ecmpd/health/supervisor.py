"""Probing of every uplink in each family it carries, and the one path of health changes.

The supervisor keeps, per uplink and address family, a HealthTracker and (when the
family has targets) a prober and its ProbeScheduler. The daemon tells it what the
kernel shows (`adopt` at start, `follow` after every re-read, `on_carrier` at once on
a link event, `reload`); it starts, re-aims (a DHCP lease or router advertisement
named a new gateway), rebinds (the interface was re-created, the source changed) and
stops probers accordingly, and holds a family down with a reason while it cannot be
used at all (`no interface`, `no DHCP lease yet`, ...), probing nothing.

Every health change, whatever caused it (a probe round, a carrier event, a carrier-only
family coming back), goes through `_changed`: counted, logged (`uplink.up`,
`uplink.down`, `uplink.state`) and handed to the daemon's callback as a HealthChange.
One family's tracker, targets, prober and scheduler are health/probing.py's. Probers
come from an injected factory and time from an injected clock: unit-tested with a fake
prober (tests/unit/test_supervisor.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from ecmpd.config import UplinkConfig
from ecmpd.facts import KernelFacts
from ecmpd.health import probing
from ecmpd.health.degraded import GradeChange
from ecmpd.health.fsm import HealthState, Transition
from ecmpd.health.probing import FamilyProbe, ProberFactory, Probing, UplinkProbes
from ecmpd.model import FAMILY_NAMES, DesiredState, Family, nexthop_id
from ecmpd.status import UplinkReport
from ecmpd.uplinkplan import FAMILIES, carries, unavailable

log = logging.getLogger("ecmpd.health")


@dataclass(frozen=True)
class HealthChange:
    """One health transition of one uplink in one family."""

    transition: Transition
    family: Family

    @property
    def service_moved(self) -> bool:
        """Whether it moved the family in or out of service (else: within, e.g. falling)."""
        return self.transition.old.in_service != self.transition.new.in_service


class Supervisor:
    """The health of every uplink; see the module docstring."""

    def __init__(
        self,
        open_prober: ProberFactory,
        on_change: Callable[[HealthChange], None],
        clock: Callable[[], float] = time.monotonic,
        on_grade: Callable[[GradeChange, Family], None] | None = None,
    ) -> None:
        self._open = open_prober
        self._on_change = on_change
        self._on_grade = on_grade
        self._clock = clock
        self._probing: Probing | None = None  # once started
        self._facts = KernelFacts()
        self.uplinks: dict[str, UplinkProbes] = {}
        self._paces: dict[str, float] = {}  # standing-by metered uplinks' sparse intervals

    # --- life cycle ----------------------------------------------------------------

    def adopt(
        self,
        uplinks: Iterable[UplinkConfig],
        observed: DesiredState,
        facts: KernelFacts,
        balancer_table: int,
    ) -> None:
        """Trackers for a first start, from what the kernel shows (no probing yet).

        A restart must change nothing while uplinks stay healthy: a family whose nexthop
        exists but is out of its balancer group starts down, every other one unknown
        (which counts as in service) until probing says otherwise.
        """
        self._facts = facts
        self.uplinks = {u.name: self._adopt(u, observed, balancer_table) for u in uplinks}

    async def start(self, tg: asyncio.TaskGroup) -> None:
        """Probe every family that can be, with schedulers in the daemon's task group."""
        self._probing = Probing(self._open, tg, self._clock)
        for uplink in self.uplinks.values():
            for fam in uplink.families.values():
                await self._start(uplink.config, fam)

    async def reload(
        self,
        uplinks: Sequence[UplinkConfig],
        observed: DesiredState,
        facts: KernelFacts,
        balancer_table: int,
    ) -> None:
        """A new config: uplinks probed alike keep their health, the others start afresh.

        The uplinks change in one step: while the old probers stop (awaits), a status or
        a reconcile still sees every old uplink, never a half-built set without some.
        """
        self._facts = facts
        old, new = dict(self.uplinks), {}
        fresh: list[UplinkConfig] = []
        for config in uplinks:
            keep = old.pop(config.name, None)
            if keep is not None and probing.probed_alike(keep.config, config):
                keep.config = config  # a new weight or cap: same probes, same verdict
                new[config.name] = keep
                continue
            if keep is not None:
                await self._stop_uplink(keep)
            new[config.name] = self._adopt(config, observed, balancer_table)
            fresh.append(config)
        self.uplinks = new
        for config in fresh:
            for fam in new[config.name].families.values():
                await self._start(config, fam)
        for gone in old.values():
            await self._stop_uplink(gone)

    async def close(self) -> None:
        """Stop every prober."""
        for uplink in self.uplinks.values():
            await self._stop_uplink(uplink)

    # --- what the kernel shows -------------------------------------------------------

    def on_carrier(self, ifname: str, carrier: bool) -> bool:
        """A link event on an uplink's interface; True if its carrier changed.

        Carrier loss takes every family down at once (no probe round needed to know a
        dead link is dead); its return lets probing recover them.
        """
        changed = False
        for uplink in self.uplinks.values():
            if uplink.config.interface != ifname:
                continue
            for fam in uplink.families.values():
                if fam.tracker.carrier == carrier:
                    continue
                changed = True
                t = fam.tracker.on_carrier(self._clock(), carrier)
                if t is not None:
                    self._changed(fam, t)
                self._carrier_only(fam)
        return changed

    async def follow(self, facts: KernelFacts) -> None:
        """Re-aim probing and holds after a re-read of the kernel.

        A DHCP lease or a router advertisement may name a new gateway (the default probe
        target), an address may change, an interface may go or be re-created, a lease
        or router appear: each family follows.
        """
        self._facts = facts
        for uplink in self.uplinks.values():
            for family, fam in list(uplink.families.items()):
                await self._follow(uplink, family, fam)

    async def _follow(self, uplink: UplinkProbes, family: Family, fam: FamilyProbe) -> None:
        config = uplink.config
        hold = unavailable(config, self._facts, family)
        if hold != fam.hold:
            log.info(
                "uplink.held" if hold else "uplink.available",
                extra={"uplink": config.name, "family": FAMILY_NAMES[family], "reason": hold},
            )
            fam.hold = hold
            if hold is not None:
                await probing.stop(fam)
                return
            self._carrier_only(fam)
        if hold is not None:
            return
        targets = probing.check_targets(config, self._facts, family)
        if targets != fam.targets:
            # The old verdict was about the old gateway: the new one starts unknown.
            await probing.stop(fam)
            fresh = probing.new_family(config, self._facts, family, self._clock())
            fresh.tracker.on_carrier(self._clock(), fam.tracker.carrier)
            fresh.transitions = fam.transitions
            uplink.families[family] = fresh
            log.info(
                "probe.retarget",
                extra={
                    "uplink": config.name,
                    "family": FAMILY_NAMES[family],
                    "targets": [str(t) for t in targets],
                },
            )
            await self._start(config, fresh)
            return
        if fam.task is not None and fam.bound != probing.binding(config, self._facts, family):
            log.info("probe.rebind", extra={"uplink": config.name, "family": FAMILY_NAMES[family]})
            await probing.stop(fam)
        # Not probing although it could (a source not there yet, an interface back):
        # try again.
        await self._start(config, fam)

    # --- what the daemon reads -------------------------------------------------------

    def in_service(self, family: Family) -> dict[str, bool]:
        """Per uplink: health allows the family's traffic and nothing holds it down.

        An uplink that does not carry the family counts as in service in it: nothing of
        it exists there, and desired_state() never asks.
        """
        return {
            name: family not in u.families or u.families[family].in_service
            for name, u in self.uplinks.items()
        }

    def degraded(self) -> set[tuple[str, Family]]:
        """The (uplink, family) pairs over their soft limits (health.degraded)."""
        return {
            (name, family)
            for name, u in self.uplinks.items()
            for family, fam in u.families.items()
            if fam.tracker.degraded
        }

    def reports(self) -> list[UplinkReport]:
        """Each uplink's health, for the status."""
        return [
            UplinkReport(
                config=u.config,
                families={family: fam.report() for family, fam in u.families.items()},
            )
            for u in self.uplinks.values()
        ]

    def serving(self, drained: Collection[str]) -> dict[Family, set[str]]:
        """Per family, the uplinks carrying it that are in service and not drained."""
        return {
            family: {
                name
                for name, u in self.uplinks.items()
                if family in u.families and u.families[family].in_service and name not in drained
            }
            for family in FAMILIES
        }

    def states(self) -> dict[tuple[str, Family], HealthState]:
        """Each uplink's health state in each family it carries."""
        return {
            (name, family): fam.tracker.state
            for name, uplink in self.uplinks.items()
            for family, fam in uplink.families.items()
        }

    def target_counts(self) -> dict[str, dict[Family, int]]:
        """How many targets each uplink probes in each family."""
        return {
            name: {family: len(fam.targets) for family, fam in uplink.families.items()}
            for name, uplink in self.uplinks.items()
        }

    # --- the one path of health changes ----------------------------------------------

    def _changed(self, fam: FamilyProbe, t: Transition) -> None:
        fam.transitions += 1
        change = HealthChange(t, fam.family)
        event = "uplink.state"
        if change.service_moved:
            event = "uplink.up" if t.new.in_service else "uplink.down"
        log.info(
            event,
            extra={
                "uplink": t.uplink,
                "family": FAMILY_NAMES[fam.family],
                "old": t.old.value,
                "new": t.new.value,
                "reason": t.reason,
            },
        )
        self._on_change(change)

    def _graded(self, name: str, fam: FamilyProbe, change: GradeChange) -> None:
        """A grade change: logged; passed on when it makes the uplink (not) degraded."""
        moved = change.old.degraded != change.new.degraded
        event = ("uplink.degraded" if change.new.degraded else "uplink.clear") if moved else ""
        log.log(
            logging.INFO if moved else logging.DEBUG,
            event or "uplink.grade",
            extra={
                "uplink": name,
                "family": FAMILY_NAMES[fam.family],
                "old": change.old.value,
                "new": change.new.value,
                "reason": change.reason,
            },
        )
        if moved and self._on_grade is not None:
            self._on_grade(change, fam.family)

    def _carrier_only(self, fam: FamilyProbe) -> None:
        """A family without targets comes back with its carrier: nothing else can tell."""
        tracker = fam.tracker
        if fam.targets or fam.hold is not None or not tracker.carrier:
            return
        if tracker.state is HealthState.DOWN:
            now = self._clock()
            self._changed(fam, tracker.force(now, HealthState.RISING, "carrier back"))
            self._changed(fam, tracker.force(now, HealthState.UP, "carrier back, no targets"))

    # --- trackers and probers ----------------------------------------------------------

    def _adopt(
        self, config: UplinkConfig, observed: DesiredState, balancer_table: int
    ) -> UplinkProbes:
        families = {}
        for family in FAMILIES:
            if not carries(config, family):
                continue
            now = self._clock()
            fam = probing.new_family(config, self._facts, family, now)
            group = next(
                (g for g in observed.groups if g.id == nexthop_id(balancer_table, family)), None
            )
            nhid = nexthop_id(config.table, family)
            if (
                group is not None
                and any(n.id == nhid for n in observed.nexthops)
                and nhid not in dict(group.members)
            ):
                fam.tracker.force(now, HealthState.DOWN, "adopted: out of the balancer")
            iface = self._facts.interfaces.get(config.interface)
            if iface is not None and not (iface.carrier and iface.up):
                fam.tracker.on_carrier(now, False)
            families[family] = fam
        return UplinkProbes(config, families)

    async def _start(self, config: UplinkConfig, fam: FamilyProbe) -> None:
        if self._probing is None:
            return  # not started yet: start() probes every family
        await probing.start(
            fam,
            config,
            self._facts,
            self._probing,
            lambda t: self._changed(fam, t),
            lambda g: self._graded(config.name, fam, g),
            self._paces.get(config.name),
        )

    async def _stop_uplink(self, uplink: UplinkProbes) -> None:
        for fam in uplink.families.values():
            await probing.stop(fam)

    # --- probe paces ---------------------------------------------------------------------

    def set_paces(self, paces: dict[str, float]) -> None:
        """Probe these uplinks every so many seconds (standing by); all others normally."""
        changed = {n for n in set(paces) | set(self._paces) if paces.get(n) != self._paces.get(n)}
        self._paces = dict(paces)
        for name in changed:
            uplink = self.uplinks.get(name)
            if uplink is None:
                continue
            pace = paces.get(name)
            log.info(
                "probe.sparse" if pace is not None else "probe.normal",
                extra={"uplink": name, "interval": pace or uplink.config.check.interval},
            )
            for fam in uplink.families.values():
                if fam.scheduler is not None:
                    fam.scheduler.set_pace(pace)
