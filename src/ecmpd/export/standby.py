"""What a static system can hold of the failover order, for the exports.

ecmpd's daemon puts one tier in the balancer and points a pin at one uplink of its
list, and changes both as health changes. A static system has no health checks, but
the kernel itself skips a route whose links are down: each standby tier becomes a
default route in the balancer table with a higher metric, and a pin list a chain of
rules at consecutive priorities (a lookup that finds no route falls to the next rule),
ending in an unreachable rule when the pin is strict.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ecmpd.config import Config, RuleActionName
from ecmpd.desired import (
    DEFAULT4,
    DEFAULT6,
    FAMILIES,
    IPV6_METRIC,
    carries,
    uplink_plans,
)
from ecmpd.facts import KernelFacts
from ecmpd.model import (
    DesiredState,
    Family,
    GroupType,
    NexthopGroup,
    Route,
    Rule,
    RuleAction,
    nexthop_id,
)
from ecmpd.uplinkplan import UplinkPlan

# Ids of the export-only groups of standby tiers: apart from every id ecmpd gives a
# kernel object (NH_ID_BASE + table (+ 0x4000 IPv6) (+ 0x8000 swap twins)).
STANDBY_ID_STEP = 0x10000
# Why a standby route or fallback rule takes over without ecmpd, and when it does not.
LINKDOWN_NOTE = (
    "The kernel skips a route whose links have no carrier only with the sysctls",
    "net.ipv4.conf.all.ignore_routes_with_linkdown = 1 (and net.ipv6.conf.all...);",
    "a failure beyond the link (a dead ISP behind a live modem) needs ecmpd's checks.",
)


@dataclass(frozen=True)
class StandbyTier:
    """A tier above the one the balancer carries: its route, group and uplinks."""

    tier: int
    route: Route
    group: NexthopGroup
    members: tuple[UplinkPlan, ...]


def standby_tiers(config: Config, facts: KernelFacts, family: Family) -> list[StandbyTier]:
    """Each tier above the lowest, as a balancer default route whose metric says its rank."""
    plans = [p for p in uplink_plans(config, {}, facts)[family] if p.usable]
    tiers = sorted({p.tier for p in plans})
    base = IPV6_METRIC if family is Family.INET6 else 0
    out = []
    for rank, tier in enumerate(tiers[1:], start=1):
        members = tuple(p for p in plans if p.tier == tier)
        bal = config.balancer
        group = NexthopGroup(
            id=nexthop_id(bal.table, family) + STANDBY_ID_STEP * rank,
            type=bal.group,
            members=tuple(sorted((p.nexthop_id, p.weight) for p in members)),
            buckets=bal.buckets if bal.group is GroupType.RESILIENT else 0,
        )
        route = Route(
            family=family,
            table=config.balancer.table,
            dst=DEFAULT6 if family is Family.INET6 else DEFAULT4,
            nhid=group.id,
            metric=base + rank,
        )
        out.append(StandbyTier(tier, route, group, members))
    return out


def fallback_rules(config: Config, state: DesiredState) -> list[tuple[Rule, str]]:
    """Per pin list, the rules after its first choice: the next uplinks', then unreachable.

    Each comes right after the pin's own rule (priority + 1, + 2, ...), with its
    selectors: the kernel falls to the next one when a table has no route left.
    """
    names = dict(state.rule_names)
    out: list[tuple[Rule, str]] = []
    for user in config.rules:
        if user.action is not RuleActionName.PIN or user.uplink is None:
            continue
        if len(user.uplink) == 1:
            continue
        for rule in sorted(state.rules, key=lambda r: (r.priority, r.family)):
            if names.get(rule.priority) != user.name or rule.action is not RuleAction.LOOKUP:
                continue
            listed = [config.uplink(n) for n in user.uplink]
            listed = [u for u in listed if carries(u, rule.family)]
            for offset, uplink in enumerate(listed[1:], start=1):
                fallback = replace(rule, priority=rule.priority + offset, table=uplink.table)
                out.append((fallback, f"{user.name} fallback {offset}: {uplink.name}"))
            if user.strict:
                last = rule.priority + len(listed)
                refuse = replace(rule, priority=last, action=RuleAction.UNREACHABLE, table=None)
                out.append((refuse, f"{user.name}: none of {', '.join(user.uplink)} usable"))
    return out


def daemon_notes(config: Config) -> list[str]:
    """Comment lines: what of the failover order only `ecmpd run` does."""
    tiers = sorted({u.tier for u in config.uplinks})
    lines = []
    if len(tiers) > 1:
        for tier in tiers[1:]:
            names = ", ".join(u.name for u in config.uplinks if u.tier == tier)
            lines.append(f"# tier {tier} ({names}) stands by: its nexthops and tables are here,")
            lines.append("# but not in the balancer group; `ecmpd run` puts them there when no")
            lines.append("# lower tier has an uplink in service (one group change), and back.")
    for user in config.rules:
        if user.action is RuleActionName.PIN and user.uplink and len(user.uplink) > 1:
            order = " -> ".join(user.uplink)
            lines.append(f"# pin {user.name} ({order}): this script points it at {user.uplink[0]};")
            lines.append("# `ecmpd run` points it at the next in service when one fails.")
    metered = [u.name for u in config.uplinks if u.metered or u.data_cap is not None]
    if metered:
        lines.append(f"# {', '.join(metered)}: metering, data caps and failback are the daemon's.")
    queued = [u.name for u in config.uplinks if u.queue is not None]
    if queued:
        lines.append(f"# {', '.join(queued)}: the egress queue (`queue`) needs ecmpd's nftables")
        lines.append("# table to send first packets first: not here (`ecmpd plan` prints its tc).")
    if config.announce is not None:
        table = config.announce.table
        lines.append(f"# announce (table {table}): only `ecmpd run` withdraws its default route")
        lines.append("# while too few uplinks are in service (see `ecmpd export --format frr`).")
    return lines


def all_standby_tiers(config: Config, facts: KernelFacts) -> list[StandbyTier]:
    """The standby tiers of both families."""
    return [t for family in FAMILIES for t in standby_tiers(config, facts, family)]


def with_standby(
    config: Config, facts: KernelFacts, state: DesiredState, *, multipath: bool = True
) -> DesiredState:
    """The state with every standby tier's route and every pin's fallback rules.

    multipath: False for a system without multipath routes: a one-uplink tier becomes a
    plain gateway route, and a tier of several is left out (see all_standby_tiers).
    Without the daemon nothing would withdraw the `announce` route, so it is left out.
    """
    state = replace(
        state, routes=frozenset(r for r in state.routes if r.table not in state.announce_tables)
    )
    tiers = all_standby_tiers(config, facts)
    fallbacks = fallback_rules(config, state)
    names = dict(state.rule_names) | {rule.priority: name for rule, name in fallbacks}
    if multipath:
        state = add_tiers(state, tiers)
    else:
        state = replace(
            state, routes=state.routes | {_plain(t) for t in tiers if len(t.members) == 1}
        )
    return replace(
        state,
        rules=state.rules | {rule for rule, _ in fallbacks},
        rule_names=tuple(sorted(names.items())),
    )


def add_tiers(state: DesiredState, tiers: list[StandbyTier]) -> DesiredState:
    """The state with the standby tiers' balancer routes and groups."""
    return replace(
        state,
        routes=state.routes | {t.route for t in tiers},
        groups=state.groups | {t.group for t in tiers},
    )


def standby_label(config: Config, state: DesiredState, route: Route) -> str | None:
    """`tier 2 (lte), metric 1` for a standby tier's balancer route, else None."""
    if route.table != config.balancer.table or route.nhid is None:
        return None
    if route.nhid == nexthop_id(config.balancer.table, route.family):
        return None
    group = next(g for g in state.groups if g.id == route.nhid)
    ids = {m for m, _ in group.members}
    members = [u for u in config.uplinks if nexthop_id(u.table, route.family) in ids]
    tier = members[0].tier if members else 0
    return f"tier {tier} ({', '.join(u.name for u in members)}), metric {route.metric}"


def has_order(config: Config) -> bool:
    """Whether the config has a standby tier or a pin with a fallback list."""
    pins = any(r.uplink is not None and len(r.uplink) > 1 for r in config.rules)
    return pins or len({u.tier for u in config.uplinks}) > 1


def static_notes(config: Config) -> list[str]:
    """Header lines of a static export: how it holds the failover order, and its limits."""
    if not has_order(config):
        return []
    return [
        "Failover order: each standby tier is a balancer default route of a higher",
        "metric, and a pin list a chain of rules (priority +1, +2, ...) tried in turn.",
        *LINKDOWN_NOTE,
    ]


def _plain(tier: StandbyTier) -> Route:
    """A one-uplink standby tier as a plain route through its gateway."""
    (member,) = tier.members
    return replace(tier.route, nhid=None, ifname=member.ifname, gateway=member.gateway)
