"""Pure: what carries traffic in a kernel state — the failover order as it stands.

Read from a state (the one the daemon applied, or the kernel's): each family's balancer
members and the uplinks the user's pins point at; from those, the tier carrying each
family, each uplink's role, and how long a standing-by uplink may take to take over.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ecmpd.config import Config, RuleActionName
from ecmpd.health.fsm import detection_time
from ecmpd.model import FAMILY_NAMES, DesiredState, Family, RuleAction, nexthop_id
from ecmpd.order import Role, roles


@dataclass(frozen=True)
class Carrying:
    """Who carries: each family's balancer members, and the uplinks pins point at."""

    balanced: Mapping[Family, frozenset[str]]
    pinned: frozenset[str]

    def uplinks(self) -> frozenset[str]:
        """Every uplink carrying something, in any family."""
        return frozenset().union(self.pinned, *self.balanced.values())


def carrying(config: Config, state: DesiredState, rule_names: Mapping[int, str]) -> Carrying:
    """What carries in `state`; rule_names: the user's rules by priority (desired's)."""
    by_nexthop = {
        nexthop_id(u.table, family): u.name for u in config.uplinks for family in FAMILY_NAMES
    }
    balanced: dict[Family, frozenset[str]] = {}
    for family in FAMILY_NAMES:
        gid = nexthop_id(config.balancer.table, family)
        group = next((g for g in state.groups if g.id == gid), None)
        members = group.members if group is not None else ()
        balanced[family] = frozenset(by_nexthop[m] for m, _ in members if m in by_nexthop)
    pins = {r.name for r in config.rules if r.action is RuleActionName.PIN}
    by_table = {u.table: u.name for u in config.uplinks}
    pinned = frozenset(
        by_table[r.table]
        for r in state.rules
        if r.action is RuleAction.LOOKUP
        and r.table in by_table
        and rule_names.get(r.priority) in pins
        and r.fwmask is None  # a connection-mark rule shares a reply rule's priority
    )
    return Carrying(balanced, pinned)


def carrying_tiers(config: Config, now: Carrying) -> dict[Family, int | None]:
    """The tier each family's balancer carries (its lowest member's), None when empty."""
    tier = {u.name: u.tier for u in config.uplinks}
    return {
        family: min((tier[n] for n in members), default=None)
        for family, members in now.balanced.items()
    }


def uplink_roles(
    config: Config, now: Carrying, in_service: Collection[str], drained: Collection[str]
) -> dict[str, Role]:
    """Each uplink's role (status `role`)."""
    names = [u.name for u in config.uplinks]
    return roles(names, now.uplinks(), in_service, drained)


def takeover_time(config: Config, name: str, in_service: Collection[str]) -> float:
    """Worst-case seconds until a standing-by uplink carries after every lower tier fails.

    Every uplink in service in a lower tier must be found down (each within its own
    check's detection time; they fail together at worst), then one group change.
    """
    tier = config.uplink(name).tier
    lower = [u for u in config.uplinks if u.tier < tier and u.name in in_service]
    return max((detection_time(u.check) for u in lower), default=0.0)


def standing_by(roles_now: Mapping[str, Role]) -> frozenset[str]:
    """The uplinks standing by."""
    return frozenset(n for n, r in roles_now.items() if r is Role.STANDBY)
