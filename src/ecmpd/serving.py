"""Which uplinks serve, as the daemon decides each reconcile, and what the kernel then holds.

An uplink (family) serves while its health allows (health/supervisor.py: in service,
nothing holds it down) and nobody drained it by hand. From that `Serving` composes the
desired state every reconcile applies: `announce` counts only the verdicts it knows
(ecmpd.announce; a restart adopts the families whose route it finds), connections end
while an uplink is out by health with `on_failure: reset` (ecmpd.ending) or stands by
after a failback (ecmpd.orderwatch), and the failover order decides who carries.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ecmpd.announce import announced_families, known_uplinks
from ecmpd.config import Config
from ecmpd.desired import desired_state
from ecmpd.ending import ending_now
from ecmpd.facts import KernelFacts
from ecmpd.health.fsm import HealthState
from ecmpd.health.supervisor import Supervisor
from ecmpd.model import DesiredState, Family
from ecmpd.orderwatch import OrderWatch
from ecmpd.uplinkplan import FAMILIES


class Serving:
    """The drained uplinks and announce's adoption; the desired state they make with health."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.drained: set[str] = set()
        self._announce_adopted: set[Family] = set()

    def service(self, family: Family = Family.INET) -> dict[str, bool]:
        """Which uplinks may carry traffic of a family: in service by health, not drained."""
        return {
            name: ok and name not in self.drained
            for name, ok in self.supervisor.in_service(family).items()
        }

    def in_service(self) -> dict[Family, set[str]]:
        """Per family, the uplinks in service (those that carry the family)."""
        return self.supervisor.serving(self.drained)

    def drain(self, name: str, drained: bool) -> None:
        """Take an uplink out by hand (or let it back)."""
        if drained:
            self.drained.add(name)
        else:
            self.drained.discard(name)

    def follow_config(self, config: Config, observed: DesiredState) -> None:
        """A start or reload: adopt the announce routes found, forget drained uplinks gone."""
        self._announce_adopted = announced_families(observed.routes, config)
        self.drained &= set(self.supervisor.uplinks)

    def known(self) -> dict[Family, set[str]]:
        """Per family, the uplinks whose verdict counts for `announce` (see ecmpd.announce)."""
        verdicts: dict[tuple[str, Family], bool | None] = {}
        for name, uplink in self.supervisor.uplinks.items():
            for family, fam in uplink.families.items():
                unknown = fam.tracker.state is HealthState.UNKNOWN
                out = name in self.drained or fam.hold is not None
                verdicts[(name, family)] = False if out else None if unknown else fam.in_service
        return known_uplinks(verdicts, self._announce_adopted)

    def desired(self, config: Config, facts: KernelFacts, order: OrderWatch) -> DesiredState:
        """What the kernel should hold now, from the health of this moment."""
        health, health6 = self.service(), self.service(Family.INET6)
        known = self.known()
        degraded = self.supervisor.degraded()
        # Connections end for two reasons: the uplink left service (on_failure: reset,
        # ecmpd.ending), or it failed back and stands by (failback: reset, orderwatch).
        failed = ending_now(
            config, {f: self.supervisor.in_service(f) for f in FAMILIES}, self.drained
        )

        def compute(failback: Mapping[Family, Collection[str]]) -> DesiredState:
            ending = {f: {*failed.get(f, ()), *failback.get(f, ())} for f in FAMILIES}
            return desired_state(
                config,
                health,
                facts,
                health6,
                order=order.order,
                degraded=degraded,
                ending=ending,
                known=known,
            )

        return order.desired(config, compute, self.in_service())
