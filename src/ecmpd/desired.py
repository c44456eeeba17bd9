"""Pure: config + uplink health + kernel facts -> the exact kernel state ecmpd wants.

No I/O here. `apply`, `run`, `plan` and every export render from this one function,
so "what does ecmpd put in the kernel for this config" has one answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network, ip_network

from ecmpd.config import Config, Mode, RuleActionName, RuleConfig, UplinkConfig, WhenAllDown
from ecmpd.config.semantic import carries_ipv4, carries_ipv6
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.model import (
    FAMILY_NAMES,
    MAIN_TABLE,
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

# Re-exported while daemon.py and cli/status.py still import it from here (its home is model).
from ecmpd.model import nexthop_id as nexthop_id

SCOPE_LINK = 253
DEFAULT4 = IPv4Network("0.0.0.0/0")
DEFAULT6 = IPv6Network("::/0")

FAMILIES = (Family.INET, Family.INET6)
# The kernel stores an IPv6 route added with metric 0 as 1024 (IP6_RT_PRIO_USER) and
# reports it so: asking for 1024 up front keeps a second apply from seeing a change.
IPV6_METRIC = 1024

# Rule priorities inside the owned block: reply rules first (one per uplink), then the
# user's rules spaced by 10 so inserting a rule later does not renumber its neighbours.
REPLY_RULE_SLOTS = 100
USER_RULE_OFFSET = 100
USER_RULE_STEP = 10


@dataclass(frozen=True)
class UplinkPlan:
    """One uplink in one address family, with everything resolved against the kernel facts."""

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
    family: Family = Family.INET


def carries(uplink: UplinkConfig, family: Family) -> bool:
    """Whether the uplink routes this address family."""
    return carries_ipv6(uplink) if family is Family.INET6 else carries_ipv4(uplink)


def resolve_uplink(
    uplink: UplinkConfig, facts: KernelFacts, healthy: bool, family: Family = Family.INET
) -> UplinkPlan:
    """Resolve `dhcp`, the default source address and usability for one uplink and family.

    An uplink that does not carry the family resolves as unusable: nothing of it exists
    in that family.
    """
    iface = facts.interfaces.get(uplink.interface)
    gateway: IPAddress | None
    if family is Family.INET6:
        gateway6 = uplink.gateway6
        gateway = (iface.dhcp_gateway6 if iface else None) if gateway6 == "ra" else gateway6
    elif uplink.gateway == "dhcp":
        gateway = iface.dhcp_gateway if iface else None
    else:
        gateway = uplink.gateway
    carried = carries(uplink, family)
    source = _source_interface(uplink, iface, family) if carried else None
    admin_up = carried and iface is not None and iface.up
    usable = admin_up and iface is not None and iface.carrier
    # A `dhcp` uplink without a lease (an `ra` one without a router) has nowhere to send
    # traffic yet, and must not look like a point-to-point link with a gateway-less route.
    learned = uplink.gateway == "dhcp" if family is Family.INET else uplink.gateway6 == "ra"
    if learned and gateway is None:
        admin_up = usable = False
    # A gateway off the interface's prefixes (its address went, a new lease is in
    # another subnet) cannot be routed to: the kernel would refuse its nexthop and
    # routes, and that one refusal would hold up every other change of the reconcile.
    if (
        gateway is not None
        and iface is not None
        and not iface.assumed
        and not iface.reaches(gateway)
    ):
        admin_up = usable = False
    return UplinkPlan(
        name=uplink.name,
        ifname=uplink.interface,
        table=uplink.table,
        weight=uplink.weight,
        gateway=gateway,
        source=source,
        nexthop_id=nexthop_id(uplink.table, family),
        admin_up=admin_up,
        usable=usable,
        in_service=usable and healthy,
        family=family,
    )


def _source_interface(
    uplink: UplinkConfig, iface: InterfaceFacts | None, family: Family
) -> IPv4Interface | IPv6Interface | None:
    """The uplink's source address with its prefix (from the interface when known)."""
    wanted = uplink.source6 if family is Family.INET6 else uplink.source
    if wanted is None:
        return iface.primary(family) if iface else None
    if iface is not None:
        for addr in iface.addresses:
            if addr.ip == wanted:
                return addr
    return IPv6Interface(wanted) if family is Family.INET6 else IPv4Interface(wanted)


def desired_state(
    config: Config,
    health: Mapping[str, bool],
    facts: KernelFacts,
    health6: Mapping[str, bool] | None = None,
) -> DesiredState:
    """Everything ecmpd wants in the kernel for this config and this uplink health.

    `health` maps uplink names to whether probing says they are healthy; a missing
    name counts as healthy (what `apply` assumes with no daemon running). `health6`
    does the same for IPv6 alone (health is tracked per family); a name missing there
    falls back to `health`, so callers that know one verdict per uplink pass only that.
    """
    v6 = health6 or {}
    by_family = {
        Family.INET: [
            resolve_uplink(u, facts, health.get(u.name, True), Family.INET) for u in config.uplinks
        ],
        Family.INET6: [
            resolve_uplink(u, facts, v6.get(u.name, health.get(u.name, True)), Family.INET6)
            for u in config.uplinks
        ],
    }
    nexthops: set[Nexthop] = set()
    routes: set[Route] = set()
    groups: set[NexthopGroup] = set()
    for family, plans in by_family.items():
        nexthops |= {_nexthop(u, facts) for u in plans if u.usable}
        for u in plans:
            routes |= _uplink_table_routes(u, facts)
        group, balanced = _balancer(config, plans, family)
        if group is not None:
            groups.add(group)
        if balanced is not None:
            routes.add(balanced)
    rules, names = _rules(config, by_family)
    return DesiredState(
        rules=frozenset(rules),
        routes=frozenset(routes),
        nexthops=frozenset(nexthops),
        groups=frozenset(groups),
        sysctls=frozenset(_sysctls(config) | _uplink_sysctls(config, by_family)),
        nat=frozenset(_nat(config)),
        rule_names=tuple(sorted(names.items())),
    )


def has_ipv6(config: Config) -> bool:
    """Whether any uplink carries IPv6 (and so ecmpd sets up IPv6 at all)."""
    return any(carries_ipv6(u) for u in config.uplinks)


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
    config: Config, uplinks: list[UplinkPlan], family: Family = Family.INET
) -> tuple[NexthopGroup | None, Route | None]:
    """The balanced group and the default route in the balancer table, for one family.

    Each family has its own group (the kernel wants one family per group), made of that
    family's nexthops: an uplink down in IPv6 alone leaves only the IPv6 group.
    """
    if not any(carries(u, family) for u in config.uplinks):
        return None, None
    bal = config.balancer
    members = [u for u in uplinks if u.in_service]
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
        # keep: the probe targets may be what died, so keep every uplink that can be.
        members = [u for u in uplinks if u.usable]
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


def _rules(
    config: Config, by_family: Mapping[Family, list[UplinkPlan]]
) -> tuple[list[Rule], dict[int, str]]:
    """Reply rules, then the user's rules in file order, in the owned priority block.

    One priority may hold an IPv4 and an IPv6 rule (`ip rule` and `ip -6 rule` are
    separate lists): an uplink's two reply rules, and a user rule without addresses,
    which applies to both families once any uplink carries IPv6.
    """
    base = config.rule_priority
    rules: list[Rule] = []
    names: dict[int, str] = {}
    for family, uplinks in by_family.items():
        for index, u in enumerate(uplinks):
            if u.source is None:
                continue
            prio = base + index
            rules.append(
                Rule(
                    family=family,
                    priority=prio,
                    action=RuleAction.LOOKUP,
                    table=u.table,
                    src=ip_network(u.source.ip),
                )
            )
            names[prio] = f"reply:{u.name}"
    both = has_ipv6(config)
    for index, rule in enumerate(config.rules):
        prio = base + USER_RULE_OFFSET + USER_RULE_STEP * index
        for family in _rule_families(rule, both):
            by_name = {u.name: u for u in by_family[family]}
            kernel_rule = _user_rule(rule, prio, config, by_name, family)
            if kernel_rule is not None:
                rules.append(kernel_rule)
                names[prio] = rule.name
    return rules, names


def _user_rule(
    rule: RuleConfig,
    prio: int,
    config: Config,
    uplinks: Mapping[str, UplinkPlan],
    family: Family = Family.INET,
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
        if not carries(config.uplink(rule.uplink), family):
            # The uplink's table holds no route of this family: the lookup misses and
            # traffic falls through, as from a withdrawn pin. Strict refuses instead.
            if rule.strict:
                action, table = RuleAction.UNREACHABLE, None
        elif not pinned.in_service:
            # Never silently another public IP: withdraw (fall through) or refuse.
            if not rule.strict:
                return None
            action, table = RuleAction.UNREACHABLE, None
    return Rule(
        family=family,
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


def _rule_families(rule: RuleConfig, both: bool) -> tuple[Family, ...]:
    """The families a rule applies to: its addresses', else IPv4 (and IPv6 when in use)."""
    nets: list[IPNetwork] = [n for n in (rule.from_, rule.to) if n is not None]
    if nets:
        return (Family.INET6,) if nets[0].version == 6 else (Family.INET,)
    return FAMILIES if both else (Family.INET,)


def _nat(config: Config) -> set[NatTable]:
    """Router mode: masquerade on every uplink with `nat` (the default there)."""
    if config.mode is not Mode.ROUTER:
        return set()
    # IPv4 only (the table matches nfproto ipv4): an IPv6-only uplink has nothing to NAT.
    ifaces = sorted(
        u.interface for u in config.uplinks if u.nat_enabled(config.mode) and carries_ipv4(u)
    )
    return {NatTable(masquerade=tuple(ifaces))} if ifaces else set()


def _uplink_sysctls(config: Config, by_family: Mapping[Family, list[UplinkPlan]]) -> set[Sysctl]:
    """Per-uplink sysctls: loose rp_filter; in router mode, RAs still accepted on IPv6 ones.

    Probes and replies leave by one uplink and may come back by another path's
    idea of "best"; strict rp_filter (1) would drop them. The kernel uses the
    maximum of conf.all and conf.<if>, so 2 on the interface is loose whatever
    `all` says, and nothing outside ecmpd's uplinks is touched.

    IPv6 forwarding (router mode) makes the kernel ignore router advertisements on
    every interface with accept_ra 1 (the default): an uplink that learns its address
    by SLAAC would lose it when its lifetime ends. accept_ra 2 keeps the uplinks doing
    what they did before; the LAN side is left alone. IPv6 has no rp_filter.
    """
    sysctls = {
        Sysctl(f"net.ipv4.conf.{u.ifname}.rp_filter", "2")
        for u in by_family[Family.INET]
        if u.admin_up
    }
    if config.mode is Mode.ROUTER:
        sysctls |= {
            Sysctl(f"net.ipv6.conf.{u.ifname}.accept_ra", "2")
            for u in by_family[Family.INET6]
            if u.admin_up
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
