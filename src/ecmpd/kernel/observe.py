"""Read-only: what ecmpd owns in the kernel, and the facts it plans against.

Ownership is by routing protocol id: every route, rule and nexthop ecmpd creates
carries RTPROT_ECMPD, so an object without it is never read as ecmpd's (and never
changed or deleted); the ones inside ecmpd's priority block or tables are reported
as conflicts instead.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from ipaddress import IPv4Interface, IPv6Interface, ip_interface
from typing import Any

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_GETRULE

from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.rules import dump_message, parse_rule
from ecmpd.kernel.sysctl import read_sysctl
from ecmpd.model import (
    RTPROT_ECMPD,
    DesiredState,
    Family,
    GroupType,
    Nexthop,
    NexthopGroup,
    ObservedState,
    Route,
    RouteType,
    Rule,
    Sysctl,
)

IFF_UP = 0x1
IFF_POINTOPOINT = 0x10
RESERVED_TABLES = {0, 253, 254, 255}
MAIN_TABLE = 254
FAMILIES = (socket.AF_INET, socket.AF_INET6)


def read_interfaces(ipr: Any) -> dict[int, InterfaceFacts]:
    """Every interface by index, with its addresses and main-table default gateway."""
    addrs: dict[int, list[IPv4Interface | IPv6Interface]] = {}
    for msg in ipr.get_addr():
        addr = (
            msg.get_attr("IFA_ADDRESS")
            if msg["family"] == socket.AF_INET6
            else (msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS"))
        )
        if addr:
            addrs.setdefault(msg["index"], []).append(ip_interface(f"{addr}/{msg['prefixlen']}"))
    gateways: dict[tuple[int, int], Any] = {}
    for family in FAMILIES:
        defaults = [
            r
            for r in nl.dump_routes(ipr, family, MAIN_TABLE)
            if r.dst.prefixlen == 0 and r.gateway is not None and r.ifindex is not None
        ]
        # Lowest metric wins, as in the kernel's own choice.
        for route in sorted(defaults, key=lambda r: -r.metric):
            assert route.ifindex is not None
            gateways[(route.ifindex, family)] = route.gateway
    result: dict[int, InterfaceFacts] = {}
    for msg in ipr.get_links():
        index = msg["index"]
        flags = msg["flags"]
        result[index] = InterfaceFacts(
            name=msg.get_attr("IFLA_IFNAME"),
            index=index,
            up=bool(flags & IFF_UP),
            carrier=bool(msg.get_attr("IFLA_CARRIER")),
            pointopoint=bool(flags & IFF_POINTOPOINT),
            addresses=tuple(addrs.get(index, ())),
            dhcp_gateway=gateways.get((index, socket.AF_INET)),
            dhcp_gateway6=gateways.get((index, socket.AF_INET6)),
        )
    return result


def dump_rules(ipr: Any) -> list[tuple[Rule, int]]:
    """Every IPv4/IPv6 rule with its protocol."""
    msgs = ipr.nlm_request(
        dump_message(), msg_type=RTM_GETRULE, msg_flags=NLM_F_REQUEST | NLM_F_DUMP
    )
    return [parsed for parsed in (parse_rule(m) for m in msgs) if parsed is not None]


def observe(ipr: Any, recorded_sysctls: Mapping[str, str]) -> tuple[ObservedState, KernelFacts]:
    """What ecmpd owns now, and everything else the planner must respect."""
    links = read_interfaces(ipr)
    names = {i: f.name for i, f in links.items()}

    rules, foreign_prios = set(), set()
    for rule, proto in dump_rules(ipr):
        if proto == RTPROT_ECMPD:
            rules.add(rule)
        else:
            foreign_prios.add((rule.family, rule.priority))

    routes, foreign_tables = set(), set()
    for family in FAMILIES:
        for kr in nl.dump_routes(ipr, family):
            if kr.protocol == RTPROT_ECMPD:
                routes.add(_route(kr, names))
            elif kr.table not in RESERVED_TABLES:
                foreign_tables.add(kr.table)

    nexthops, groups, foreign_ids = set(), set(), set()
    for kn in nl.dump_nexthops(ipr):
        if kn.protocol != RTPROT_ECMPD:
            foreign_ids.add(kn.id)
        elif kn.members is not None:
            groups.add(_group(kn))
        elif kn.ifindex is not None:
            nexthops.add(
                Nexthop(
                    id=kn.id,
                    family=Family(kn.family),
                    ifname=names.get(kn.ifindex, f"if{kn.ifindex}"),
                    gateway=kn.gateway,
                    onlink=kn.onlink,
                )
            )

    sysctls = {Sysctl(name, read_sysctl(name) or "") for name in recorded_sysctls}
    observed = DesiredState(
        rules=frozenset(rules),
        routes=frozenset(routes),
        nexthops=frozenset(nexthops),
        groups=frozenset(groups),
        sysctls=frozenset(sysctls),
    )
    facts = KernelFacts(
        interfaces={f.name: f for f in links.values()},
        foreign_rule_priorities=frozenset(foreign_prios),
        foreign_tables=frozenset(foreign_tables),
        foreign_nexthop_ids=frozenset(foreign_ids),
    )
    return observed, facts


def _route(kr: nl.KernelRoute, names: Mapping[int, str]) -> Route:
    return Route(
        family=Family(kr.family),
        table=kr.table,
        dst=kr.dst,
        type=RouteType.UNREACHABLE if kr.type == RouteType.UNREACHABLE.value else RouteType.UNICAST,
        ifname=names.get(kr.ifindex) if kr.ifindex is not None and kr.nhid is None else None,
        gateway=kr.gateway if kr.nhid is None else None,
        nhid=kr.nhid,
        prefsrc=kr.prefsrc,
        scope=kr.scope,
        metric=kr.metric,
        onlink=kr.onlink,
    )


def _group(kn: nl.KernelNexthop) -> NexthopGroup:
    assert kn.members is not None
    return NexthopGroup(
        id=kn.id,
        type=kn.group_type or GroupType.HASH_THRESHOLD,
        members=kn.members,
        buckets=kn.buckets,
        idle_timer=kn.idle_timer,
        unbalanced_timer=kn.unbalanced_timer,
    )


def ifindex_map(facts: KernelFacts) -> dict[str, int]:
    """Interface name -> index, for building messages."""
    return {name: f.index for name, f in facts.interfaces.items()}
