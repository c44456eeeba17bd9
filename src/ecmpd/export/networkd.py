"""`export --format networkd`: systemd-networkd `.network` files, one per uplink interface.

Rules and routes that belong to no single link (the balanced route, bypass/main/balance
rules) go into the first uplink's file: networkd ties every object to a link. Checked
against systemd.network(5) of systemd 252 (Debian bookworm).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from ecmpd.config import Config
from ecmpd.connections import without_connections
from ecmpd.desired import (
    DEFAULT4,
    DEFAULT6,
    IPV6_METRIC,
    SCOPE_LINK,
    desired_state,
    resolve_uplink,
)
from ecmpd.export.standby import LINKDOWN_NOTE, standby_label, static_notes, with_standby
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.model import (
    MAIN_TABLE,
    DesiredState,
    Family,
    GroupType,
    IPNetwork,
    Nexthop,
    NexthopGroup,
    Route,
    RouteType,
    Rule,
    RuleAction,
)

Section = tuple[str, list[str]]
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}
FULL_MASK = 0xFFFFFFFF
# networkd puts the gateway of the link's router advertisements into a route with this.
RA_GATEWAY = "_ipv6ra"
DHCP_GATEWAY = "_dhcp4"


def files(config: Config, facts: KernelFacts) -> dict[str, str]:
    """One `10-ecmpd-IFACE.network` per uplink interface, in config order."""
    state = without_connections(with_standby(config, facts, desired_state(config, {}, facts)))
    names = dict(state.rule_names)
    homes = home_interfaces(config)
    out: dict[str, str] = {}
    for ifname in homes:
        first = ifname == homes[0]
        sections: list[Section] = [("Match", [f"Name={ifname}"])]
        sections.append(_network(config, ifname, facts.interfaces.get(ifname)))
        for route in _routes(config, state, facts):
            if route_home(route, config) == ifname:
                sections.append(_route(route, config, state))
        for rule, family in policy_rules(state.rules):
            if rule_home(rule, config) == ifname:
                sections.append(_rule(rule, names.get(rule.priority, ""), family))
        header = _header(config, ifname, state if first else None)
        out[f"10-ecmpd-{ifname}.network"] = _text(header, sections)
    return out


def home_interfaces(config: Config) -> list[str]:
    """The uplink interfaces, each once, in config order."""
    return list(dict.fromkeys(u.interface for u in config.uplinks))


def table_interface(config: Config, table: int | None) -> str | None:
    """The interface of the uplink whose table this is, if any."""
    for uplink in config.uplinks:
        if uplink.table == table:
            return uplink.interface
    return None


def rule_home(rule: Rule, config: Config) -> str:
    """The link whose file holds a rule: its uplink's, else the first uplink's."""
    return table_interface(config, rule.table) or config.uplinks[0].interface


def route_home(route: Route, config: Config) -> str:
    """The link whose file holds a route: its device's, else the first uplink's."""
    return route.ifname or config.uplinks[0].interface


def follows_ra(config: Config, ifname: str) -> bool:
    """Whether an uplink on this link takes its IPv6 gateway from router advertisements."""
    return any(u.interface == ifname and u.gateway6 == "ra" for u in config.uplinks)


def ra_tables(config: Config) -> frozenset[int]:
    """The tables of the uplinks that take their IPv6 gateway from router advertisements."""
    return frozenset(u.table for u in config.uplinks if u.gateway6 == "ra")


def _routes(config: Config, state: DesiredState, facts: KernelFacts) -> list[Route]:
    """The state's routes, and a default route for each `dhcp`/`ra` uplink table lacking one."""
    # Without a lease or router at export time ecmpd has no such route yet; networkd
    # fills in the gateway (Gateway=_dhcp4 / _ipv6ra) whenever one is learnt.
    routes = set(state.routes)
    have = {(r.family, r.table) for r in routes if learned_gateway(r, config)}
    for uplink in config.uplinks:
        for family, learns in ((Family.INET, uplink.gateway == "dhcp"),
                               (Family.INET6, uplink.gateway6 == "ra")):  # fmt: skip
            if not learns or (family, uplink.table) in have:
                continue
            source = resolve_uplink(uplink, facts, True, family).source
            routes.add(
                Route(
                    family=family,
                    table=uplink.table,
                    dst=DEFAULT6 if family is Family.INET6 else DEFAULT4,
                    ifname=uplink.interface,
                    prefsrc=source.ip if source is not None else None,
                    metric=IPV6_METRIC if family is Family.INET6 else 0,
                )
            )
    return _sorted_routes(routes)


def learned_gateway(route: Route, config: Config) -> str | None:
    """networkd's name for the gateway a `dhcp`/`ra` uplink's own default route follows."""
    if route.dst.prefixlen != 0 or route.nhid is not None:
        return None
    if is_ra_default(route, config):
        return RA_GATEWAY
    dhcp_tables = {u.table for u in config.uplinks if u.gateway == "dhcp"}
    if route.family is Family.INET and route.table in dhcp_tables:
        return DHCP_GATEWAY
    return None


def is_ra_default(route: Route, config: Config) -> bool:
    """Whether this is the IPv6 default route of a `gateway6: ra` uplink's own table."""
    return (
        route.family is Family.INET6
        and route.dst.prefixlen == 0
        and route.nhid is None
        and route.table in ra_tables(config)
    )


def policy_rules(rules: Iterable[Rule]) -> list[tuple[Rule, str]]:
    """The rules in priority order, each with the Family= its section needs ("": none).

    A rule without From=/To= is IPv4 to networkd unless Family= says otherwise. ecmpd
    gives such a rule to both families when an uplink carries IPv6, mostly as two equal
    rules: those become one section with Family=both; an IPv6 one that differs from
    its IPv4 twin (a strict pin to an uplink without IPv6) keeps its own, Family=ipv6.
    """
    ordered = sorted(rules, key=lambda r: (r.priority, r.family))
    present = frozenset(ordered)
    out: list[tuple[Rule, str]] = []
    for rule in ordered:
        if rule.src is not None or rule.dst is not None:
            out.append((rule, ""))
            continue
        v6 = rule.family is Family.INET6
        twin = replace(rule, family=Family.INET if v6 else Family.INET6)
        if twin not in present:
            out.append((rule, "ipv6" if v6 else ""))
        elif not v6:
            out.append((rule, "both"))
        # else: the twin of an IPv4 rule already written with Family=both
    return out


def prefix(net: IPNetwork) -> str:
    """A host prefix as its bare address, anything else as CIDR."""
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _sorted_routes(routes: Iterable[Route]) -> list[Route]:
    """Table by table, the default route first, as a reader expects them."""
    return sorted(routes, key=lambda r: (r.table, r.dst.prefixlen, str(r.dst), r.metric))


def _header(config: Config, ifname: str, state: DesiredState | None) -> list[str]:
    """What the file is for; the first file also says what it holds for all links."""
    uplinks = ", ".join(u.name for u in config.uplinks if u.interface == ifname)
    lines = [
        f"# ecmpd export --format networkd: uplink {uplinks} ({ifname}) of {config.filename},",
        "# for /etc/systemd/network/. Static: no health checks and no failover; for those",
        f"# run `ecmpd run` instead (it owns rule priorities {config.rule_priority}-"
        f"{config.rule_priority + 999}: do not use both).",
    ]
    if state is None:
        return lines
    lines += [f"# {line}" for line in static_notes(config)]
    lines.append("# This first file also holds what belongs to no single link (the balanced")
    lines.append("# route, and the rules that do not look up an uplink's table).")
    if state.sysctls:
        lines.append("# networkd cannot set sysctls: put these in /etc/sysctl.d/90-ecmpd.conf:")
        for sysctl in sorted(state.sysctls, key=lambda s: s.name):
            lines.append(f"#   {sysctl.name} = {sysctl.value}")
    return lines


def _network(config: Config, ifname: str, iface: InterfaceFacts | None) -> Section:
    """The link's own addressing, since this file takes the link over."""
    lines = [
        "# networkd applies only the first .network file (in lexical order) matching a",
        "# link; this one sorts early and takes the link over, so it carries its addresses.",
        "# To keep your own file instead, copy the sections below [Network] into a drop-in",
        "# of it (/etc/systemd/network/<your file>.network.d/ecmpd.conf).",
    ]
    dhcp = any(u.interface == ifname and u.gateway == "dhcp" for u in config.uplinks)
    if dhcp:
        lines.append("# gateway: dhcp: the lease's default route goes to main, as ecmpd expects.")
        lines.append("DHCP=ipv4")
    ra = follows_ra(config, ifname)
    if ra:
        # networkd ignores advertisements where forwarding is on (router mode) unless
        # told otherwise; its RA route goes to main, where ecmpd reads the gateway from.
        lines.append("# gateway6: ra: IPv6 addresses (SLAAC) and the default route in main come")
        lines.append("# from router advertisements.")
        lines.append("IPv6AcceptRA=yes")
    # ifindex 0 marks facts built from the config alone: no real prefix is known.
    if iface is None or iface.index <= 0:
        lines.append(f"# Address= unknown (exported without reading the kernel): add {ifname}'s.")
        return ("Network", lines)
    for address in iface.addresses:
        if (address.version == 4 and dhcp) or (address.version == 6 and ra):
            continue  # the lease's, or the advertised prefix's
        if address.version == 6 and address.is_link_local:
            continue  # the kernel's own
        lines.append(f"Address={address}")
    return ("Network", lines)


def _route(route: Route, config: Config, state: DesiredState) -> Section:
    """A [Route] section; the balanced route as a weighted multipath route."""
    lines = [f"# {line}" for line in _route_role(route, config, state)]
    if route.type is RouteType.UNREACHABLE:
        lines.append("Type=unreachable")
    lines.append(f"Destination={route.dst}")
    if route.nhid is not None:
        group = next((g for g in state.groups if g.id == route.nhid), None)
        ra_links = frozenset(u.interface for u in config.uplinks if u.gateway6 == "ra")
        lines += _multipath(group, {n.id: n for n in state.nexthops}, ra_links)
    if learned := learned_gateway(route, config):
        known = f" ({route.gateway} at export time)" if route.gateway is not None else ""
        what = (
            "gateway6: ra: the advertised router"
            if learned == RA_GATEWAY
            else ("gateway: dhcp: the lease's gateway")
        )
        lines.append(f"# {what}{known}")
        lines.append(f"Gateway={learned}")
    elif route.gateway is not None:
        lines.append(f"Gateway={route.gateway}")
        if route.onlink:
            lines.append("GatewayOnLink=yes")
    if route.prefsrc is not None:
        lines.append(f"PreferredSource={route.prefsrc}")
    if route.scope == SCOPE_LINK:
        lines.append("Scope=link")
    if route.metric:
        lines.append(f"Metric={route.metric}")
    lines.append(f"Table={_table(route.table)}")
    return ("Route", lines)


def _route_role(route: Route, config: Config, state: DesiredState) -> list[str]:
    """What a route is for, in a few words (a standby tier's: when the kernel uses it)."""
    standby = standby_label(config, state, route)
    if standby is not None:
        return [
            f"balancer (table {route.table}): standby {standby}: the kernel uses it",
            "while no route of a lower metric has a live link.",
            *LINKDOWN_NOTE,
        ]
    return [_role(route, config)]


def _role(route: Route, config: Config) -> str:
    if route.table == config.balancer.table:
        if route.type is RouteType.UNREACHABLE:
            return f"balancer (table {route.table}): no uplink usable at export time"
        return f"balancer (table {route.table}): the weighted default route"
    what = "default route" if route.dst.prefixlen == 0 else "connected prefix"
    return f"uplink table {route.table}: {what}"


def _multipath(
    group: NexthopGroup | None, nexthops: Mapping[int, Nexthop], ra_links: frozenset[str]
) -> list[str]:
    """MultiPathRoute= lines for a group's members (weights 1..256, as the kernel's)."""
    if group is None:
        return []
    lines = []
    if group.type is GroupType.RESILIENT:
        lines += [
            f"# ecmpd uses a resilient nexthop group ({group.buckets} buckets); networkd has",
            "# none, so a member change here rehashes flows (hash-threshold multipath).",
        ]
    for nhid, weight in group.members:
        nh = nexthops[nhid]
        if nh.gateway is None:
            lines.append(
                f"# {nh.ifname} (weight {weight}) left out, MultiPathRoute= needs a gateway"
            )
            continue
        if nh.family is Family.INET6 and nh.ifname in ra_links:
            lines.append(f"# {nh.ifname}: the router advertised at export time (no _ipv6ra here)")
        lines.append(f"MultiPathRoute={nh.gateway}@{nh.ifname} {weight}")
    return lines


def _rule(rule: Rule, name: str, family: str = "") -> Section:
    """A [RoutingPolicyRule] section with every selector the rule has."""
    lines = [f"# {name}"] if name else []
    if family:
        lines.append(f"Family={family}")
    if rule.src is not None:
        lines.append(f"From={prefix(rule.src)}")
    if rule.dst is not None:
        lines.append(f"To={prefix(rule.dst)}")
    if rule.iif is not None:
        lines.append(f"IncomingInterface={rule.iif}")
    if rule.fwmark is not None:
        mask = rule.fwmask if rule.fwmask is not None else FULL_MASK
        # Decimal: networkd's parser is not documented to take hex.
        lines.append(f"FirewallMark={rule.fwmark}" + ("" if mask == FULL_MASK else f"/{mask}"))
    if rule.ip_proto is not None:
        lines.append(f"IPProtocol={PROTO_NAMES.get(rule.ip_proto, rule.ip_proto)}")
    if rule.sport is not None:
        lines.append(f"SourcePort={rule.sport}")
    if rule.dport is not None:
        lines.append(f"DestinationPort={rule.dport}")
    if rule.action is RuleAction.UNREACHABLE:
        lines.append("Type=unreachable")
    else:
        lines.append(f"Table={_table(rule.table or MAIN_TABLE)}")
    lines.append(f"Priority={rule.priority}")
    if rule.suppress_prefixlength is not None:
        lines.append(f"SuppressPrefixLength={rule.suppress_prefixlength}")
    return ("RoutingPolicyRule", lines)


def _table(table: int) -> str:
    return "main" if table == MAIN_TABLE else str(table)


def _text(header: list[str], sections: list[Section]) -> str:
    """The file: header comments, then each section, a blank line between."""
    blocks = ["\n".join(header)]
    blocks += ["\n".join([f"[{name}]", *lines]) for name, lines in sections]
    return "\n\n".join(blocks) + "\n"
