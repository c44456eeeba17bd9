"""Pure: config + uplink health + kernel facts -> the exact kernel state ecmpd wants.

No I/O here. `apply`, `run`, `plan` and every export render from this one function,
so "what does ecmpd put in the kernel for this config" has one answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network, ip_network

from ecmpd.config import Config, Mode, RuleActionName, RuleConfig, UplinkConfig, WhenAllDown
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.model import (
    NH_ID_BASE,
    DesiredState,
    Family,
    GroupType,
    IPAddress,
    IPNetwork,
    NatTable,
    Nexthop,
    NexthopGroup,
    Route,
    RouteType,
    Rule,
    RuleAction,
    Sysctl,
)

MAIN_TABLE = 254
SCOPE_LINK = 253
DEFAULT4 = IPv4Network("0.0.0.0/0")
DEFAULT6 = IPv6Network("::/0")

# Rule priorities inside the owned block: reply rules first (one per uplink), then the
# user's rules spaced by 10 so inserting a rule later does not renumber its neighbours.
REPLY_RULE_SLOTS = 100
USER_RULE_OFFSET = 100
USER_RULE_STEP = 10


@dataclass(frozen=True)
class UplinkPlan:
    """One uplink with everything resolved against the kernel facts."""

    name: str
    ifname: str
    table: int
    weight: int
    gateway: IPAddress | None
    source: IPv4Interface | IPv6Interface | None
    nexthop_id: int
    admin_up: bool  # the interface exists and is up: routes on it can exist
    usable: bool  # the interface exists, is up and has carrier: a nexthop can exist
    in_service: bool  # usable and healthy: a member of the balancer


def nexthop_id(table: int) -> int:
    """The id of an object ecmpd owns for a table (uplink nexthop or balancer group)."""
    return NH_ID_BASE + table


def resolve_uplink(uplink: UplinkConfig, facts: KernelFacts, healthy: bool) -> UplinkPlan:
    """Resolve `dhcp`, the default source address and usability for one uplink."""
    iface = facts.interfaces.get(uplink.interface)
    gateway: IPAddress | None
    if uplink.gateway == "dhcp":
        gateway = iface.dhcp_gateway if iface else None
    else:
        gateway = uplink.gateway
    source = _source_interface(uplink, iface)
    admin_up = iface is not None and iface.up
    usable = admin_up and iface is not None and iface.carrier
    # A `dhcp` uplink without a lease has nowhere to send traffic yet (and must not
    # look like a point-to-point link with a gateway-less default route).
    if uplink.gateway == "dhcp" and gateway is None:
        admin_up = usable = False
    return UplinkPlan(
        name=uplink.name,
        ifname=uplink.interface,
        table=uplink.table,
        weight=uplink.weight,
        gateway=gateway,
        source=source,
        nexthop_id=nexthop_id(uplink.table),
        admin_up=admin_up,
        usable=usable,
        in_service=usable and healthy,
    )


def _source_interface(
    uplink: UplinkConfig, iface: InterfaceFacts | None
) -> IPv4Interface | IPv6Interface | None:
    """The uplink's source address with its prefix (from the interface when known)."""
    primary = iface.primary(Family.INET) if iface else None
    if uplink.source is None:
        return primary
    if iface is not None:
        for addr in iface.addresses:
            if addr.ip == uplink.source:
                return addr
    return IPv4Interface(uplink.source)


def desired_state(config: Config, health: Mapping[str, bool], facts: KernelFacts) -> DesiredState:
    """Everything ecmpd wants in the kernel for this config and this uplink health.

    `health` maps uplink names to whether probing says they are healthy; a missing
    name counts as healthy (what `apply` assumes with no daemon running).
    """
    uplinks = [resolve_uplink(u, facts, health.get(u.name, True)) for u in config.uplinks]
    nexthops = {
        Nexthop(
            id=u.nexthop_id,
            family=Family.INET,
            ifname=u.ifname,
            gateway=u.gateway,
            onlink=u.gateway is not None and _pointopoint(facts, u.ifname),
        )
        for u in uplinks
        if u.usable
    }
    routes: set[Route] = set()
    for u in uplinks:
        routes |= _uplink_table_routes(u, facts)
    group, balanced = _balancer(config, uplinks)
    groups = {group} if group is not None else set()
    if balanced is not None:
        routes.add(balanced)
    rules, names = _rules(config, uplinks)
    return DesiredState(
        rules=frozenset(rules),
        routes=frozenset(routes),
        nexthops=frozenset(nexthops),
        groups=frozenset(groups),
        sysctls=frozenset(_sysctls(config) | _uplink_sysctls(uplinks)),
        nat=frozenset(_nat(config)),
        rule_names=tuple(sorted(names.items())),
    )


def _pointopoint(facts: KernelFacts, ifname: str) -> bool:
    iface = facts.interfaces.get(ifname)
    return iface is not None and iface.pointopoint


def _uplink_table_routes(u: UplinkPlan, facts: KernelFacts) -> set[Route]:
    """The uplink's own table: its connected prefix and a default route out of it.

    Plain gateway routes, not nexthop objects: the kernel keeps them through a carrier
    flap (it deletes nexthop objects), so pins and reply rules recover on their own.
    """
    routes: set[Route] = set()
    if not u.admin_up:
        return routes
    if u.source is not None and u.source.network.prefixlen < u.source.max_prefixlen:
        routes.add(
            Route(
                family=Family.INET,
                table=u.table,
                dst=u.source.network,
                ifname=u.ifname,
                prefsrc=u.source.ip,
                scope=SCOPE_LINK,
            )
        )
    if u.gateway is None:
        routes.add(
            Route(
                family=Family.INET,
                table=u.table,
                dst=DEFAULT4,
                ifname=u.ifname,
                prefsrc=u.source.ip if u.source else None,
                scope=SCOPE_LINK,
            )
        )
    else:
        routes.add(
            Route(
                family=Family.INET,
                table=u.table,
                dst=DEFAULT4,
                ifname=u.ifname,
                gateway=u.gateway,
                prefsrc=u.source.ip if u.source else None,
                onlink=_pointopoint(facts, u.ifname),
            )
        )
    return routes


def _balancer(
    config: Config, uplinks: list[UplinkPlan]
) -> tuple[NexthopGroup | None, Route | None]:
    """The balanced group and the default route in the balancer table that uses it."""
    bal = config.balancer
    members = [u for u in uplinks if u.in_service]
    all_down = not members
    if all_down:
        if bal.when_all_down is WhenAllDown.UNREACHABLE:
            return None, Route(
                family=Family.INET, table=bal.table, dst=DEFAULT4, type=RouteType.UNREACHABLE
            )
        if bal.when_all_down is WhenAllDown.MAIN:
            # No balanced route: the balance rule's lookup misses and the next rule
            # (eventually the main table) decides.
            return None, None
        # keep: the probe targets may be what died, so keep every uplink that can be.
        members = [u for u in uplinks if u.usable]
        if not members:
            return None, None
    resilient = bal.group is GroupType.RESILIENT
    group = NexthopGroup(
        id=nexthop_id(bal.table),
        type=bal.group,
        members=tuple(sorted((u.nexthop_id, u.weight) for u in members)),
        buckets=bal.buckets if resilient else 0,
        idle_timer=round(bal.idle_timer) if resilient else 0,
        unbalanced_timer=round(bal.unbalanced_timer) if resilient else 0,
    )
    route = Route(family=Family.INET, table=bal.table, dst=DEFAULT4, nhid=group.id)
    return group, route


def _rules(config: Config, uplinks: list[UplinkPlan]) -> tuple[list[Rule], dict[int, str]]:
    """Reply rules, then the user's rules in file order, in the owned priority block."""
    base = config.rule_priority
    rules: list[Rule] = []
    names: dict[int, str] = {}
    for index, u in enumerate(uplinks):
        if u.source is None:
            continue
        prio = base + index
        rules.append(
            Rule(
                family=Family.INET,
                priority=prio,
                action=RuleAction.LOOKUP,
                table=u.table,
                src=ip_network(u.source.ip),
            )
        )
        names[prio] = f"reply:{u.name}"
    by_name = {u.name: u for u in uplinks}
    for index, rule in enumerate(config.rules):
        prio = base + USER_RULE_OFFSET + USER_RULE_STEP * index
        kernel_rule = _user_rule(rule, prio, config, by_name)
        if kernel_rule is not None:
            rules.append(kernel_rule)
            names[prio] = rule.name
    return rules, names


def _user_rule(
    rule: RuleConfig, prio: int, config: Config, uplinks: Mapping[str, UplinkPlan]
) -> Rule | None:
    """One configured rule as an ip rule, or None while a non-strict pin is withdrawn."""
    action = RuleAction.LOOKUP
    table: int | None
    suppress: int | None = None
    if rule.action is RuleActionName.BYPASS:
        table, suppress = MAIN_TABLE, 0
    elif rule.action is RuleActionName.MAIN:
        table = MAIN_TABLE
    elif rule.action is RuleActionName.BALANCE:
        table = config.balancer.table
    else:
        assert rule.uplink is not None  # the schema requires it for pin
        pinned = uplinks[rule.uplink]
        table = pinned.table
        if not pinned.in_service:
            # Never silently another public IP: withdraw (fall through) or refuse.
            if not rule.strict:
                return None
            action, table = RuleAction.UNREACHABLE, None
    return Rule(
        family=_rule_family(rule),
        priority=prio,
        action=action,
        table=table,
        src=rule.from_,
        dst=rule.to,
        iif=rule.iif,
        fwmark=rule.fwmark,
        # The kernel reports a bare fwmark with an all-ones mask; say so up front.
        fwmask=rule.fwmask if rule.fwmask is not None or rule.fwmark is None else 0xFFFFFFFF,
        ip_proto=rule.proto,
        sport=rule.sport,
        dport=rule.dport,
        suppress_prefixlength=suppress,
    )


def _rule_family(rule: RuleConfig) -> Family:
    nets: list[IPNetwork] = [n for n in (rule.from_, rule.to) if n is not None]
    if nets and nets[0].version == 6:
        return Family.INET6
    return Family.INET


def _nat(config: Config) -> set[NatTable]:
    """Router mode: masquerade on every uplink with `nat` (the default there)."""
    if config.mode is not Mode.ROUTER:
        return set()
    ifaces = sorted(u.interface for u in config.uplinks if u.nat_enabled(config.mode))
    return {NatTable(masquerade=tuple(ifaces))} if ifaces else set()


def _uplink_sysctls(uplinks: list[UplinkPlan]) -> set[Sysctl]:
    """Loose reverse-path filtering on every uplink that exists.

    Probes and replies leave by one uplink and may come back by another path's
    idea of "best"; strict rp_filter (1) would drop them. The kernel uses the
    maximum of conf.all and conf.<if>, so 2 on the interface is loose whatever
    `all` says, and nothing outside ecmpd's uplinks is touched.
    """
    return {Sysctl(f"net.ipv4.conf.{u.ifname}.rp_filter", "2") for u in uplinks if u.admin_up}


def _sysctls(config: Config) -> set[Sysctl]:
    """The multipath hash policy (and custom field set) ecmpd sets."""
    sysctls = {Sysctl("net.ipv4.fib_multipath_hash_policy", str(config.hash.policy))}
    if config.mode is Mode.ROUTER:
        sysctls.add(Sysctl("net.ipv4.ip_forward", "1"))
    if config.hash.policy == 3:
        mask = config.hash.fields_mask()
        # Decimal: how the kernel reads the value back.
        sysctls.add(Sysctl("net.ipv4.fib_multipath_hash_fields", str(mask)))
    return sysctls
