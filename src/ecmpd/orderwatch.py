"""The daemon's side of the failover order (adapter around pure pieces).

It meters (meter.py: bytes, caps, spillover -> the OrderState desired_state() takes),
adds the failed-back uplinks to the state's reset sets, and after each reconcile says
what the reconcile did to the order: which family's carrying tier changed (a takeover
or a failback: logged, hooked, counted) and which uplinks newly failed back (their
connections are ended, after the group change that reconcile applied). It also says
how each metered uplink is probed: sparingly while it stands by, at the normal rate
once it is needed or may be soon (see `paces`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from ecmpd.carrying import Carrying, carrying, carrying_tiers, standing_by, uplink_roles
from ecmpd.config import Config
from ecmpd.ending import KernelCall, end_all, endings_for
from ecmpd.facts import KernelFacts
from ecmpd.failback import failback_ending
from ecmpd.health.fsm import HealthState
from ecmpd.hooks import tier_env
from ecmpd.kernel.resets import Ending
from ecmpd.meter import Meter
from ecmpd.metering import standby_interval
from ecmpd.model import FAMILY_NAMES, DesiredState, Family
from ecmpd.order import OrderState, Role
from ecmpd.spillover import Member
from ecmpd.uplinkplan import carries

log = logging.getLogger("ecmpd.order")

Ends = Mapping[Family, Collection[str]]
Service = Mapping[Family, Collection[str]]  # per family, the uplinks in service


@dataclass(frozen=True)
class TierChange:
    """A family's carrying tier changed (None: no tier carries)."""

    family: Family
    old: int | None
    new: int | None
    uplinks: tuple[str, ...]  # the balancer's members now

    @property
    def takeover(self) -> bool:
        """A higher tier took over (or one did where none carried)."""
        return self.new is not None and (self.old is None or self.new > self.old)


class OrderWatch:
    """See the module docstring."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.carrying = Carrying({}, frozenset())
        self.tiers: dict[Family, int | None] = {}
        self.ending: dict[Family, frozenset[str]] = {}
        self.takeovers = 0
        self._pending: tuple[Carrying, dict[Family, frozenset[str]]] | None = None

    @classmethod
    def in_run_dir(cls, run_dir: Path, on_change: Callable[[str], None]) -> OrderWatch:
        return cls(Meter(run_dir, on_change))

    @property
    def order(self) -> OrderState:
        return self.meter.order

    def desired(
        self, config: Config, compute: Callable[[Ends], DesiredState], service: Service
    ) -> DesiredState:
        """The desired state, with the failed-back uplinks in its reset sets."""
        state = compute({})
        now = carrying(config, state, dict(state.rule_names))
        ending = failback_ending(config, now, service)
        if any(ending.values()):
            state = compute(ending)
        self._pending = (now, ending)
        return state

    def applied(
        self, config: Config, facts: KernelFacts
    ) -> tuple[list[TierChange], list[tuple[str, Ending]]]:
        """After a reconcile: the tier changes, and the connections to end now."""
        if self._pending is None:
            return [], []
        now, ending = self._pending
        self._pending = None
        tiers = carrying_tiers(config, now)
        changes = [
            TierChange(family, self.tiers.get(family), tier, tuple(sorted(now.balanced[family])))
            for family, tier in tiers.items()
            if family in self.tiers and self.tiers[family] != tier
        ]
        # Newly failed back: it carried in the family until this reconcile (an uplink
        # standing by from the start has no connections to end).
        fresh: dict[str, set[Family]] = {}
        before = self.carrying
        for family, names in ending.items():
            carried = before.balanced.get(family, frozenset()) | before.pinned
            for name in (names - self.ending.get(family, frozenset())) & carried:
                fresh.setdefault(name, set()).add(family)
        self.carrying, self.tiers, self.ending = now, tiers, ending
        for change in changes:
            self.takeovers += change.takeover
            log.info(
                "tier.takeover" if change.takeover else "tier.failback",
                extra={
                    "family": FAMILY_NAMES[change.family],
                    "old": change.old,
                    "new": change.new,
                    "uplinks": list(change.uplinks),
                },
            )
        ordered = {name: sorted(families) for name, families in fresh.items()}
        return changes, endings_for(config, facts, ordered) if fresh else []

    async def after_reconcile(
        self, config: Config, facts: KernelFacts, call: KernelCall
    ) -> list[dict[str, str]]:
        """Log tier changes and end the newly failed-back uplinks' connections (on the
        kernel thread, through `call`); the hook environments of the tier changes."""
        changes, ends = self.applied(config, facts)
        if ends:
            log.info("failback.reset", extra={"uplinks": [name for name, _ in ends]})
            await end_all(call, ends)
        return [tier_env(c.family, c.old, c.new, c.uplinks) for c in changes]

    def spill_tiers(self, service: Service) -> dict[int, list[Member]]:
        """For spillover: per tier, its uplinks in service (any family) with a bandwidth."""
        config = self.meter.config
        if config is None:
            return {}
        serving = {name for names in service.values() for name in names}
        out: dict[int, list[Member]] = {}
        for u in config.uplinks:
            if u.name in serving and u.bandwidth is not None:
                out.setdefault(u.tier, []).append(Member(u.name, u.bandwidth))
        return out

    def roles(self, config: Config, service: Service, drained: Collection[str]) -> dict[str, Role]:
        """Each uplink's role as the last reconcile left it."""
        in_any = {name for names in service.values() for name in names}
        return uplink_roles(config, self.carrying, in_any, drained)

    def paces(
        self,
        config: Config,
        health: Mapping[tuple[str, Family], HealthState],
        targets: Mapping[str, Mapping[Family, int]],
        service: Service,
        drained: Collection[str],
    ) -> dict[str, float]:
        """Sparse probe intervals for the metered uplinks standing by.

        Not while any family's carrying uplinks are all short of a settled `up` (a probe
        round failed, or none has a verdict yet): a standby that may be needed in the
        next second is probed at the normal rate from that first failed round, so by
        the time the tier below is found down its own verdict is fresh.
        """
        for family, members in self.carrying.balanced.items():
            if not any(carries(u, family) for u in config.uplinks):
                continue
            states = [health.get((name, family)) for name in members]
            if not any(state is HealthState.UP for state in states):
                return {}
        standby = standing_by(self.roles(config, service, drained))
        return {
            u.name: standby_interval(u.check, dict(targets.get(u.name, {})))
            for u in config.uplinks
            if u.metered and u.name in standby
        }
