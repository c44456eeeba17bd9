"""Pure: config + uplink health + kernel facts -> the exact kernel state ecmpd wants.

No I/O here. `apply`, `run`, `plan` and every export render from this one function,
so "what does ecmpd put in the kernel for this config" has one answer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ecmpd.announce import Known, announce_routes, announce_tables
from ecmpd.config import Config, Mode, WhenAllDown
from ecmpd.config.semantic import carries_ipv6
from ecmpd.connections import connection_table, mark_rules, mark_slots, mark_values
from ecmpd.facts import KernelFacts
from ecmpd.model import (
    DEFAULT4,
    DEFAULT6,
    FAMILY_NAMES,
    IPV6_METRIC,
    MAIN_TABLE,
    SCOPE_LINK,
    DesiredState,
    Family,
    GroupType,
    IPNetwork,
    Nexthop,
    NexthopGroup,
    Route,
    RouteType,
    Sysctl,
    nexthop_id,
)
from ecmpd.mptcp import Degraded, mptcp_state
from ecmpd.order import OrderState, balanced, kept, pin_choice
from ecmpd.pinresets import pin_resets
from ecmpd.queues import desired_queues
from ecmpd.ruleset import USER_RULE_OFFSET, USER_RULE_STEP, policy_rules
from ecmpd.uplinkplan import (
    FAMILIES,
    UplinkPlan,
    carries,
    has_ipv6,
    resolve_uplink,
)

# Re-exported: callers ask `desired` for the names the kernel state is built from.
__all__ = [
    "DEFAULT4",
    "DEFAULT6",
    "FAMILIES",
    "IPV6_METRIC",
    "MAIN_TABLE",
    "SCOPE_LINK",
    "USER_RULE_OFFSET",
    "USER_RULE_STEP",
    "UplinkPlan",
    "carries",
    "desired_state",
    "has_ipv6",
    "nexthop_id",
    "pin_choice",
    "resolve_uplink",
    "uplink_plans",
]


def uplink_plans(
    config: Config,
    health: Mapping[str, bool],
    facts: KernelFacts,
    health6: Mapping[str, bool] | None = None,
    order: OrderState | None = None,
) -> dict[Family, list[UplinkPlan]]:
    """Every uplink resolved in each family, in config order (see desired_state)."""
    v6 = health6 or {}
    order = order or OrderState()
    return {
        family: [
            resolve_uplink(
                u,
                facts,
                (v6 if family is Family.INET6 else {}).get(u.name, health.get(u.name, True)),
                family,
                order,
            )
            for u in config.uplinks
        ]
        for family in FAMILIES
    }


def desired_state(
    config: Config,
    health: Mapping[str, bool],
    facts: KernelFacts,
    health6: Mapping[str, bool] | None = None,
    order: OrderState | None = None,
    degraded: Degraded = (),
    ending: Mapping[Family, Collection[str]] | None = None,
    known: Known = None,
) -> DesiredState:
    """Everything ecmpd wants in the kernel for this config and this uplink health.

    `health` maps uplink names to whether probing says they are healthy; a missing
    name counts as healthy (what `apply` assumes with no daemon running). `health6`
    does the same for IPv6 alone (health is tracked per family); a name missing there
    falls back to `health`, so callers that know one verdict per uplink pass only that.
    `order` holds what the daemon measured that changes the failover order (uplinks
    over their data cap, tiers spilling over); none by default.
    `degraded`: the (uplink, family) pairs over their soft limits (MPTCP backup).
    `ending` names, per family, the uplinks whose established connections are being
    ended (connections.ending_uplinks): the table resets their TCP connections.
    `known`: per family, the uplinks whose verdict counts for `announce` (None: all).
    """
    order = order or OrderState()
    by_family = uplink_plans(config, health, facts, health6, order)
    nexthops: set[Nexthop] = set()
    routes: set[Route] = set()
    groups: set[NexthopGroup] = set()
    for family, plans in by_family.items():
        nexthops |= {_nexthop(u, facts) for u in plans if u.usable}
        for u in plans:
            routes |= _uplink_table_routes(u, facts)
        group, route = _balancer(config, plans, family, order)
        if group is not None:
            groups.add(group)
        if route is not None:
            routes.add(route)
    routes |= announce_routes(config, by_family, order, known)
    rules, names = policy_rules(config, by_family)
    endpoints, limits, mptcp_sysctls = mptcp_state(config, by_family, facts, degraded)
    slots = mark_slots(config, facts.mark_slots)
    values = mark_values(config, slots)
    families = FAMILIES if has_ipv6(config) else (Family.INET,)
    rules += mark_rules(config, values, families)
    pins = pin_resets(config, by_family, values)
    return DesiredState(
        rules=frozenset(rules),
        routes=frozenset(routes),
        nexthops=frozenset(nexthops),
        groups=frozenset(groups),
        sysctls=frozenset(
            _sysctls(config) | _uplink_sysctls(config, by_family, facts) | mptcp_sysctls
        ),
        nft=frozenset({connection_table(config, values, ending or {}, pins)}),
        endpoints=frozenset(endpoints),
        mptcp_limits=frozenset(limits),
        queues=desired_queues(config, facts),
        rule_names=tuple(sorted(names.items())),
        mark_slots=tuple(sorted(slots.items())),
        announce_tables=announce_tables(config),
    )


def _nexthop(u: UplinkPlan, facts: KernelFacts) -> Nexthop:
    """The uplink's nexthop object in its family (a link-local gateway names its device)."""
    return Nexthop(
        id=u.nexthop_id,
        family=u.family,
        ifname=u.ifname,
        gateway=u.gateway,
        onlink=u.gateway is not None and _pointopoint(facts, u.ifname),
    )


def _default(family: Family) -> IPNetwork:
    return DEFAULT6 if family is Family.INET6 else DEFAULT4


def _metric(family: Family) -> int:
    return IPV6_METRIC if family is Family.INET6 else 0


def _pointopoint(facts: KernelFacts, ifname: str) -> bool:
    iface = facts.interfaces.get(ifname)
    return iface is not None and iface.pointopoint


def _uplink_table_routes(u: UplinkPlan, facts: KernelFacts) -> set[Route]:
    """The uplink's own table: its connected prefix and a default route out of it.

    Plain gateway routes, not nexthop objects: the kernel keeps them through a carrier
    flap (it deletes nexthop objects), so pins and reply rules recover on their own.
    IPv6 has no route scopes (the kernel reports every route as universe) and stores
    metric 0 as 1024; both are said as the kernel will report them.
    """
    routes: set[Route] = set()
    if not u.admin_up:
        return routes
    v6 = u.family is Family.INET6
    link = 0 if v6 else SCOPE_LINK
    metric = _metric(u.family)
    prefsrc = u.source.ip if u.source else None
    if u.source is not None and u.source.network.prefixlen < u.source.max_prefixlen:
        routes.add(
            Route(
                family=u.family,
                table=u.table,
                dst=u.source.network,
                ifname=u.ifname,
                prefsrc=u.source.ip,
                scope=link,
                metric=metric,
            )
        )
    if u.gateway is None:
        routes.add(
            Route(
                family=u.family,
                table=u.table,
                dst=_default(u.family),
                ifname=u.ifname,
                prefsrc=prefsrc,
                scope=link,
                metric=metric,
            )
        )
    else:
        routes.add(
            Route(
                family=u.family,
                table=u.table,
                dst=_default(u.family),
                ifname=u.ifname,
                gateway=u.gateway,
                prefsrc=prefsrc,
                metric=metric,
                onlink=_pointopoint(facts, u.ifname),
            )
        )
    return routes


def _balancer(
    config: Config, uplinks: list[UplinkPlan], family: Family, order: OrderState
) -> tuple[NexthopGroup | None, Route | None]:
    """The balanced group and the default route in the balancer table, for one family.

    Each family has its own group (the kernel wants one family per group), made of that
    family's nexthops: an uplink down in IPv6 alone leaves only the IPv6 group. The
    members are the carrying tier's (order.balanced): a higher tier joins only when no
    lower one has an uplink in service in this family, or while a lower one spills over.
    """
    if not any(carries(u, family) for u in config.uplinks):
        return None, None
    bal = config.balancer
    members = balanced(uplinks, order)
    metric = _metric(family)
    if not members:
        if bal.when_all_down is WhenAllDown.UNREACHABLE:
            # The kernel reports an IPv6 reject route on the loopback device.
            return None, Route(
                family=family,
                table=bal.table,
                dst=_default(family),
                type=RouteType.UNREACHABLE,
                ifname="lo" if family is Family.INET6 else None,
                metric=metric,
            )
        if bal.when_all_down is WhenAllDown.MAIN:
            # No balanced route: the balance rule's lookup misses and the next rule
            # (eventually the main table) decides.
            return None, None
        # keep: the probe targets may be what died, so keep every uplink that can be
        # (of the lowest tier that has one: a metered backup is not woken for nothing).
        members = kept(uplinks)
        if not members:
            return None, None
    resilient = bal.group is GroupType.RESILIENT
    group = NexthopGroup(
        id=nexthop_id(bal.table, family),
        type=bal.group,
        members=tuple(sorted((u.nexthop_id, u.weight) for u in members)),
        buckets=bal.buckets if resilient else 0,
        idle_timer=round(bal.idle_timer) if resilient else 0,
        unbalanced_timer=round(bal.unbalanced_timer) if resilient else 0,
    )
    route = Route(
        family=family, table=bal.table, dst=_default(family), nhid=group.id, metric=metric
    )
    return group, route


def _uplink_sysctls(
    config: Config, by_family: Mapping[Family, list[UplinkPlan]], facts: KernelFacts
) -> set[Sysctl]:
    """Per-uplink sysctls: loose rp_filter; in router mode, RAs still accepted on IPv6 ones.

    Probes and replies leave by one uplink and may come back by another path's
    idea of "best"; strict rp_filter (1) would drop them. The kernel uses the
    maximum of conf.all and conf.<if>, so 2 on the interface is loose whatever
    `all` says, and nothing outside ecmpd's uplinks is touched.

    IPv6 forwarding (router mode) makes the kernel ignore router advertisements on
    every interface with accept_ra 1 (the default): an uplink that learns its address
    by SLAAC would lose it when its lifetime ends. accept_ra 2 keeps the uplinks doing
    what they did before; the LAN side is left alone. IPv6 has no rp_filter. It holds
    whenever the interface exists, not only while a router is known or the link is up:
    a `gateway6: ra` uplink must hear the first router (and a new one after the last
    withdrew), which the kernel would otherwise drop.
    """
    sysctls = {
        Sysctl(f"net.ipv4.conf.{u.ifname}.rp_filter", "2")
        for u in by_family[Family.INET]
        if u.admin_up
    }
    if config.mode is Mode.ROUTER:
        sysctls |= {
            Sysctl(f"net.ipv6.conf.{u.interface}.accept_ra", "2")
            for u in config.uplinks
            if carries_ipv6(u) and u.interface in facts.interfaces
        }
    return sysctls


# src-ip | dst-ip | ip-proto | src-port | dst-port (net.ipv4.fib_multipath_hash_fields)
L4_FIELDS_MASK = 0x37


def _sysctls(config: Config) -> set[Sysctl]:
    """The multipath hash policy (and custom field set) ecmpd sets, per family in use."""
    families = [FAMILY_NAMES[f] for f in FAMILIES if f is Family.INET or has_ipv6(config)]
    sysctls: set[Sysctl] = set()
    policy, mask = config.hash.policy, config.hash.fields_mask()
    if policy == 1 and config.mode is Mode.ROUTER:
        # Policy 1 hashes a *forwarded* packet by the L4 hash it already carries
        # (skb->l4_hash: a NIC's RSS hash, or a local sender's socket txhash that is
        # re-drawn on every retransmission timeout), not by its 5-tuple: a LAN flow
        # could change uplink mid-connection (breaking its NAT) and `explain` could not
        # predict it. The same five fields as a custom hash are computed from the
        # headers; for the router's own traffic the result is the same.
        policy, mask = 3, L4_FIELDS_MASK
    for fam in families:
        # The two families number their policies alike (0 l3, 1 l4, 2 l3-inner, 3
        # custom) and share the field bits; IPv6's l3 includes the flow label.
        sysctls.add(Sysctl(f"net.{fam}.fib_multipath_hash_policy", str(policy)))
        if policy == 3:
            # Decimal: how the kernel reads the value back.
            sysctls.add(Sysctl(f"net.{fam}.fib_multipath_hash_fields", str(mask)))
    if config.mode is Mode.ROUTER:
        sysctls.add(Sysctl("net.ipv4.ip_forward", "1"))
        if has_ipv6(config):
            sysctls.add(Sysctl("net.ipv6.conf.all.forwarding", "1"))
    return sysctls
