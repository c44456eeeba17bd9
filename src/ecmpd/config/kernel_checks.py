"""Checks of a config against the kernel it will run on (pure: the facts are read elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address, IPv6Address

from ecmpd.config.issues import ConfigIssue, did_you_mean, sort_issues
from ecmpd.config.schema import PRIORITY_SPAN, Config
from ecmpd.config.semantic import carries_ipv4, carries_ipv6
from ecmpd.config.uplink import UplinkConfig
from ecmpd.facts import InterfaceFacts, KernelFacts, MainDefault
from ecmpd.marks import clashing
from ecmpd.model import ANNOUNCE_MAIN_METRIC, MAIN_TABLE, RTPROT_FRR_STATIC, Family, nexthop_id
from ecmpd.queues import foreign_root

Finding = tuple[str, str]
# A finding that only says "not there yet" (the interface, a lease, an address): at boot
# that is normal, `ecmpd run` holds the uplink down until it appears.
HOLDS = "ecmpd run holds the uplink down until then"


def _missing_interface(name: str, facts: KernelFacts) -> str:
    return f"no interface '{name}'" + did_you_mean(name, facts.interfaces)


def _gateway_on_link(gateway: IPv4Address | IPv6Address, iface: InterfaceFacts) -> str | None:
    """Why the gateway is not reachable on the interface's own prefixes, or None if it is."""
    if iface.reaches(gateway):
        return None
    prefixes = [a for a in iface.addresses if a.version == gateway.version]
    have = ", ".join(str(a) for a in prefixes) or f"no IPv{gateway.version} address"
    return f"{gateway} is not in any prefix of {iface.name} ({have})"


def _source_on_interface(source: IPv4Address | IPv6Address, iface: InterfaceFacts) -> str | None:
    """Why the source address is not one of the interface's, or None if it is."""
    own = [a.ip for a in iface.addresses if a.version == source.version]
    if source in own:
        return None
    have = ", ".join(str(ip) for ip in own) or f"no IPv{source.version} address"
    return f"{source} is not an address of {iface.name} (it has {have})"


def _uplink(at: str, uplink: UplinkConfig, facts: KernelFacts) -> Iterator[tuple[str, str, bool]]:
    """The interface exists and the gateways and sources fit its addresses.

    Yields (field path, message, only-not-there-yet): a missing interface, a DHCP lease
    not taken yet, an interface with no address of the family yet are warnings; a
    gateway or source that contradicts the addresses the interface has is an error.
    """
    iface = facts.interfaces.get(uplink.interface)
    if iface is None:
        hint = did_you_mean(uplink.interface, facts.interfaces).removeprefix("; ")
        missing = f"no interface '{uplink.interface}' yet" + (f" ({hint})" if hint else "")
        yield f"{at}.interface", f"{missing}; {HOLDS}", True
        return
    if uplink.gateway == "dhcp":
        if iface.dhcp_gateway is None:
            yield f"{at}.gateway", f"{iface.name} has no DHCP lease yet; {HOLDS}", True
    # `gateway: bgp` without a BGP route yet is no error either: the session comes later.
    elif isinstance(uplink.gateway, IPv4Address) and (
        why := _gateway_on_link(uplink.gateway, iface)
    ):
        yield f"{at}.gateway", *_unless_unaddressed(why, iface, 4)
    # `gateway6: ra` without a router yet is no error: in router mode the router only
    # listens to advertisements once ecmpd set accept_ra=2; the family waits till then.
    if isinstance(uplink.gateway6, IPv6Address) and (
        why := _gateway_on_link(uplink.gateway6, iface)
    ):
        yield f"{at}.gateway6", *_unless_unaddressed(why, iface, 6)
    for key, source in (("source", uplink.source), ("source6", uplink.source6)):
        if source is not None and (why := _source_on_interface(source, iface)):
            yield f"{at}.{key}", *_unless_unaddressed(why, iface, source.version)


def _unless_unaddressed(why: str, iface: InterfaceFacts, version: int) -> tuple[str, bool]:
    """A mismatch is an error, unless the interface has no address of the family yet."""
    if any(a.version == version for a in iface.addresses):
        return why, False
    return f"{why}; {HOLDS}", True


def _family_name(family: Family) -> str:
    return "IPv4" if family is Family.INET else "IPv6"


def _priorities(config: Config, facts: KernelFacts) -> Iterator[Finding]:
    """No foreign rule inside ecmpd's priority block."""
    first, last = config.rule_priority, config.rule_priority + PRIORITY_SPAN - 1
    taken: dict[int, list[str]] = {}
    for family, priority in sorted(facts.foreign_rule_priorities):
        if first <= priority <= last:
            taken.setdefault(priority, []).append(_family_name(family))
    if taken:
        used = ", ".join(f"{p} ({' and '.join(fams)})" for p, fams in sorted(taken.items()))
        message = f"ecmpd needs priorities {first}-{last}, but rules it does not own use {used}"
        yield "rule_priority", message


def _tables(config: Config, facts: KernelFacts) -> Iterator[Finding]:
    """ecmpd's tables and nexthop ids are not already someone else's."""
    owned = [(f"uplinks[{i}].table", u.table) for i, u in enumerate(config.uplinks)]
    owned.append(("balancer.table", config.balancer.table))
    announce = config.announce
    for key, table in (("table", announce.table), ("table6", announce.table6)) if announce else ():
        if table in facts.foreign_tables and table != MAIN_TABLE:
            yield f"announce.{key}", f"table {table} already holds routes ecmpd did not create"
    # IPv6 objects only exist when an uplink has IPv6.
    families = [Family.INET]
    if any(carries_ipv6(u) for u in config.uplinks):
        families.append(Family.INET6)
    for path, table in owned:
        if table in facts.foreign_tables:
            yield path, f"table {table} already holds routes ecmpd did not create"
        for family in families:
            nhid = nexthop_id(table, family)
            if nhid in facts.foreign_nexthop_ids:
                ipv6 = " IPv6" if family is Family.INET6 else ""
                ours = f"ecmpd's{ipv6} for table {table}"
                yield path, f"nexthop id {nhid} ({ours}) is taken by a foreign nexthop"


def _rule_interfaces(config: Config, facts: KernelFacts) -> Iterator[Finding]:
    """A rule's iif names an existing interface."""
    for i, rule in enumerate(config.rules):
        if rule.iif is not None and rule.iif not in facts.interfaces:
            yield f"rules[{i}].iif", _missing_interface(rule.iif, facts)


def _mptcp_endpoints(config: Config, facts: KernelFacts) -> Iterator[Finding]:
    """No foreign MPTCP endpoint on an address ecmpd would make an endpoint of."""
    if not facts.foreign_mptcp_endpoints:
        return
    for i, uplink in enumerate(config.uplinks):
        if not uplink.mptcp_enabled(config.mptcp):
            continue
        iface = facts.interfaces.get(uplink.interface)
        for given, family in ((uplink.source, Family.INET), (uplink.source6, Family.INET6)):
            primary = iface.primary(family) if iface is not None else None
            address = given or (primary.ip if primary is not None else None)
            ep_id = facts.foreign_mptcp_endpoints.get(address) if address else None
            if ep_id is not None:
                yield (
                    f"uplinks[{i}]",
                    (
                        f"MPTCP endpoint id {ep_id} on {address} is not ecmpd's: remove it"
                        f" (ip mptcp endpoint delete id {ep_id}) or set mptcp: false here"
                    ),
                )


def _marks(config: Config, facts: KernelFacts) -> Iterator[Finding]:
    """No foreign ip rule or nftables rule sets or tests ecmpd's connection-mark bits."""
    mask = config.connections.mark
    for use in clashing(facts.foreign_mark_uses, mask):
        what = "sets" if use.writes else "tests"
        bits = use.mask & mask
        yield "connections.mark", f"{use.where} {what} mark bits {bits:#010x}, which ecmpd owns"


# FRR's zebra ranks routes by administrative distance first: a kernel route 0, its own
# static routes 1, a route imported from a table (`ip import-table N`) 15 by default;
# among equal distances, the lower metric.
KERNEL_DISTANCE, FRR_STATIC_DISTANCE, IMPORT_DISTANCE = 0, 1, 15


def shadowing(config: Config, defaults: Sequence[MainDefault]) -> dict[Family, list[MainDefault]]:
    """Per announced family, the others' default routes in main that zebra would take
    over the announce route (so FRR announces them, or nothing, instead of ecmpd's).

    Imported from a table (distance 15), every kernel route and FRR static route beats it.
    In main itself (`table6: main`, a kernel route like the others), a route with a metric
    not above ANNOUNCE_MAIN_METRIC does, unless FRR installed it (distance 1 loses to 0).
    """
    if config.announce is None:
        return {}
    found: dict[Family, list[MainDefault]] = {}
    for route in defaults:
        family = route.family
        carried = carries_ipv6 if family is Family.INET6 else carries_ipv4
        if config.announce.min_uplinks.of(family) is None:
            continue
        if not any(carried(u) for u in config.uplinks):
            continue
        distance = FRR_STATIC_DISTANCE if route.protocol == RTPROT_FRR_STATIC else KERNEL_DISTANCE
        if config.announce.table_of(family) == MAIN_TABLE:
            wins = distance == KERNEL_DISTANCE and route.metric <= ANNOUNCE_MAIN_METRIC
        else:
            wins = distance < IMPORT_DISTANCE
        if wins:
            found.setdefault(family, []).append(route)
    return found


# How `ip` names the protocols of the default routes read for `announce`.
PROTOCOL_NAMES = {2: "kernel", 3: "boot", 4: "static", 9: "ra", 16: "dhcp", 196: "FRR static"}


def _shadowed(config: Config, facts: KernelFacts) -> Iterator[Finding]:
    """Another default route in main that FRR's zebra would take over the announce route."""
    for family, routes in sorted(shadowing(config, facts.main_defaults).items()):
        assert config.announce is not None
        six = family is Family.INET6 and config.announce.table6 is not None
        path = f"announce.{'table6' if six else 'table'}"
        where = "in main" if config.announce.table_of(family) == MAIN_TABLE else "imported"
        for route in routes:
            via = f" via {route.gateway}" if route.gateway is not None else ""
            dev = f" dev {route.ifname}" if route.ifname else ""
            proto = PROTOCOL_NAMES.get(route.protocol, str(route.protocol))
            yield (
                path,
                (
                    f"the {_family_name(family)} default route{via}{dev} (proto {proto}, metric"
                    f" {route.metric}) in the main table would shadow the announce route ({where})"
                    " in FRR's zebra: FRR would announce it, or nothing, instead; keep main free of"
                    " other default routes on an edge"
                ),
            )


def warnings_against_kernel(config: Config, facts: KernelFacts) -> list[ConfigIssue]:
    """What this kernel does not have yet (an interface, a lease, an address), and what
    would undo the config's intent there (a default route shadowing the announce one):
    warnings."""
    later = [
        (path, message)
        for i, u in enumerate(config.uplinks)
        for path, message, later in _uplink(f"uplinks[{i}]", u, facts)
        if later
    ]
    return sort_issues(
        ConfigIssue(config.filename, config.line_of(path), path, message, warning=True)
        for path, message in [*later, *_shadowed(config, facts)]
    )


def _queues(config: Config, facts: KernelFacts) -> Iterator[Finding]:
    """No `queue` on an interface whose root qdisc is someone else's."""
    for i, uplink in enumerate(config.uplinks):
        held = facts.foreign_qdiscs.get(uplink.interface)
        if uplink.queue is not None and held is not None:
            yield (
                f"uplinks[{i}].queue",
                f"{foreign_root(uplink.interface, held)} or drop `queue` here",
            )


def queue_conflicts(config: Config, facts: KernelFacts) -> list[ConfigIssue]:
    """The uplinks whose `queue` someone else's root qdisc stands in the way of (the
    daemon starts anyway and reports them as conflicts: see check_against_kernel)."""
    return sort_issues(
        ConfigIssue(config.filename, config.line_of(path), path, message)
        for path, message in _queues(config, facts)
    )


def check_against_kernel(
    config: Config, facts: KernelFacts, *, queues: bool = True
) -> list[ConfigIssue]:
    """Every way the config conflicts with this kernel, at the line of the field concerned.

    What is only not there yet is left to `warnings_against_kernel`. `queues`: False
    leaves out queue_conflicts (the daemon: an uplink's queue must not stop failover).
    """
    uplinks = [
        (path, message)
        for i, u in enumerate(config.uplinks)
        for path, message, later in _uplink(f"uplinks[{i}]", u, facts)
        if not later
    ]
    findings = [
        *uplinks,
        *_priorities(config, facts),
        *_tables(config, facts),
        *_rule_interfaces(config, facts),
        *_mptcp_endpoints(config, facts),
        *_marks(config, facts),
        *(_queues(config, facts) if queues else ()),
    ]
    return sort_issues(
        ConfigIssue(config.filename, config.line_of(path), path, message)
        for path, message in findings
    )
