"""Read-only: what ecmpd owns in the kernel, and the facts it plans against.

Ownership is by routing protocol id: every route, rule and nexthop ecmpd creates
carries RTPROT_ECMPD, so an object without it is never read as ecmpd's (and never
changed or deleted); the ones inside ecmpd's priority block or tables are reported
as conflicts instead.

One dump per object kind, parsed by hand; routes are dumped with kernel-side filters
(ecmpd's protocol, the main table's default-route installers, the checked tables), so
a full BGP table in main is walked by the kernel but never sent.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
from collections.abc import Collection, Mapping
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any

from ecmpd.facts import InterfaceFacts, KernelFacts, MainDefault
from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.routemsg import FOREIGN_DEFAULT_PROTOCOLS, KernelRoute, main_defaults, scan_routes
from ecmpd.kernel.rules import dump_rules
from ecmpd.kernel.sysctl import read_sysctl
from ecmpd.kernel.transport import get_str, netlink_for, parse_attrs
from ecmpd.marks import FULL, MarkUse
from ecmpd.model import (
    RTPROT_ECMPD,
    TABLE_NAMES,
    DesiredState,
    Family,
    GroupType,
    IPAddress,
    Nexthop,
    NexthopGroup,
    ObservedState,
    Route,
    RouteType,
    Sysctl,
)

IFF_UP = 0x1
IFF_POINTOPOINT = 0x10
RESERVED_TABLES = {0, *TABLE_NAMES}  # 0: unspecified
FAMILIES: tuple[int, int] = (socket.AF_INET, socket.AF_INET6)
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
IFLA_IFNAME, IFLA_CARRIER = 3, 33
IFA_ADDRESS, IFA_LOCAL = 1, 2
_IFINFO = struct.Struct("=BxHiII")  # struct ifinfomsg {family, type, index, flags, change}
_IFADDR = struct.Struct("=BBBBI")  # struct ifaddrmsg {family, prefixlen, flags, scope, index}

Address = IPv4Interface | IPv6Interface


def read_addresses(handle: Any) -> dict[int, list[Address]]:
    """Every interface address by interface index, in the kernel's order."""
    addrs: dict[int, list[Address]] = {}
    answers = netlink_for(handle).dump(RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
    for kind, payload in answers:
        if kind != RTM_NEWADDR:
            continue
        family, prefixlen, _, _, index = _IFADDR.unpack_from(payload)
        attrs = parse_attrs(payload, _IFADDR.size)
        if family == socket.AF_INET:
            # IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's on p2p links.
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw:
                addrs.setdefault(index, []).append(IPv4Interface((raw, prefixlen)))
        elif family == socket.AF_INET6:
            raw = attrs.get(IFA_ADDRESS)
            if raw:
                addrs.setdefault(index, []).append(IPv6Interface((raw, prefixlen)))
    return addrs


def default_gateways(defaults: list[KernelRoute]) -> dict[int, IPAddress]:
    """Interface index -> gateway of its main-table default route, lowest metric winning."""
    gateways: dict[int, IPAddress] = {}
    # Lowest metric last, so it wins, as in the kernel's own choice; a multipath route
    # (zebra's, over several edges) gives each of its interfaces a gateway.
    for route in sorted(defaults, key=lambda r: -r.metric):
        for ifindex, gateway in ((route.ifindex, route.gateway), *route.nexthops):
            if ifindex is not None and gateway is not None:
                gateways[ifindex] = gateway
    return gateways


Gateways = tuple[Mapping[int, IPAddress], Mapping[int, IPAddress]]  # IPv4, IPv6 by ifindex


def read_main_defaults(handle: Any, ifindex: Mapping[str, int]) -> tuple[MainDefault, ...]:
    """Others' default routes in main that FRR's zebra would rank above an imported one."""
    names = {index: name for name, index in ifindex.items()}
    return tuple(
        MainDefault(
            family=Family(family),
            protocol=route.protocol,
            metric=route.metric,
            gateway=route.gateway,
            ifname=names.get(route.ifindex) if route.ifindex is not None else None,
        )
        for family in FAMILIES
        for route in main_defaults(handle, family, FOREIGN_DEFAULT_PROTOCOLS)
    )


def read_interfaces(
    handle: Any, gateways: Gateways, bgp: Gateways = ({}, {})
) -> dict[int, InterfaceFacts]:
    """Every interface by index, with its addresses and main-table default gateways."""
    gw4, gw6 = gateways
    addrs = read_addresses(handle)
    result: dict[int, InterfaceFacts] = {}
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    for kind, payload in netlink_for(handle).dump(RTM_GETLINK, body):
        if kind != RTM_NEWLINK:
            continue
        _, _, index, flags, _ = _IFINFO.unpack_from(payload)
        attrs = parse_attrs(payload, _IFINFO.size)
        carrier = attrs.get(IFLA_CARRIER)
        result[index] = InterfaceFacts(
            name=get_str(attrs, IFLA_IFNAME) or f"if{index}",
            index=index,
            up=bool(flags & IFF_UP),
            carrier=bool(carrier and carrier[0]),
            pointopoint=bool(flags & IFF_POINTOPOINT),
            addresses=tuple(addrs.get(index, ())),
            dhcp_gateway=gw4.get(index),
            dhcp_gateway6=gw6.get(index),
            bgp_gateway=bgp[0].get(index),
            bgp_gateway6=bgp[1].get(index),
        )
    return result


def observe(
    handle: Any,
    recorded_sysctls: Mapping[str, str],
    check_tables: Collection[int] = (),
    *,
    defaults: bool = True,
    bgp: bool = False,
) -> tuple[ObservedState, KernelFacts]:
    """What ecmpd owns now, and everything else the planner must respect.

    `check_tables`: the tables to look into for routes ecmpd did not create (what
    check_against_kernel reports); the facts' foreign_tables cover only those.
    `defaults`: read the main table's default routes (the DHCP/RA gateways).
    `bgp`: read its BGP default routes (`gateway: bgp`).
    """
    scans = {
        family: scan_routes(handle, family, check_tables, defaults=defaults, bgp=bgp)
        for family in FAMILIES
    }
    gateways = (
        default_gateways(scans[socket.AF_INET].main_defaults),
        default_gateways(scans[socket.AF_INET6].main_defaults),
    )
    bgp_gateways = (
        default_gateways(scans[socket.AF_INET].bgp_defaults),
        default_gateways(scans[socket.AF_INET6].bgp_defaults),
    )
    links = read_interfaces(handle, gateways, bgp_gateways)
    names = {i: f.name for i, f in links.items()}

    rules, foreign_prios, mark_uses = set(), set(), []
    for rule, proto in dump_rules(handle):
        if proto == RTPROT_ECMPD:
            rules.add(rule)
            continue
        foreign_prios.add((rule.family, rule.priority))
        if rule.fwmark is not None:
            where = f"ip{' -6' if rule.family is Family.INET6 else ''} rule {rule.priority}"
            mask = FULL if rule.fwmask is None else rule.fwmask
            mark_uses.append(MarkUse(where, mask, rule.fwmark))

    routes = {_route(kr, names) for scan in scans.values() for kr in scan.owned}
    foreign_tables = set().union(*(scan.tables for scan in scans.values())) - RESERVED_TABLES

    nexthops, groups, foreign_ids = read_nexthops(handle, names)

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
        foreign_mark_uses=tuple(mark_uses),
    )
    return observed, facts


def read_nexthops(
    handle: Any, names: Mapping[int, str]
) -> tuple[set[Nexthop], set[NexthopGroup], set[int]]:
    """ecmpd's nexthops and groups, and the ids of foreign nexthops."""
    nexthops, groups, foreign_ids = set(), set(), set()
    for kn in nl.dump_nexthops(handle):
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
    return nexthops, groups, foreign_ids


def observe_links(
    handle: Any, before: ObservedState, facts: KernelFacts
) -> tuple[ObservedState, KernelFacts]:
    """A carrier event's re-read: links, addresses and nexthops; the rest as `before`.

    Carrier loss flushes the nexthops on the device (silently) and changes links, never
    ecmpd's rules, nor the main table's defaults: those need no re-read, which with a
    full routing table in main is a walk of it. The routes through a flushed nexthop
    (or through a group that lost its last member) went with it, as the kernel does.
    A full observe follows soon anyway (the daemon's debounced resync).
    """
    gateways = (
        {f.index: f.dhcp_gateway for f in facts.interfaces.values() if f.dhcp_gateway},
        {f.index: f.dhcp_gateway6 for f in facts.interfaces.values() if f.dhcp_gateway6},
    )
    links = read_interfaces(handle, gateways)
    nexthops, groups, foreign_ids = read_nexthops(handle, {i: f.name for i, f in links.items()})
    ids = {n.id for n in nexthops} | {g.id for g in groups}
    observed = dataclasses.replace(
        before,
        nexthops=frozenset(nexthops),
        groups=frozenset(groups),
        routes=frozenset(r for r in before.routes if r.nhid is None or r.nhid in ids),
    )
    fresh = dataclasses.replace(
        facts,
        interfaces={f.name: f for f in links.values()},
        foreign_nexthop_ids=frozenset(foreign_ids),
    )
    return observed, fresh


def _route(kr: KernelRoute, names: Mapping[int, str]) -> Route:
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
