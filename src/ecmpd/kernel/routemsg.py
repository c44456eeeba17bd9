"""Route messages with the attributes pyroute2 0.9.7 drops: RTA_NH_ID and L4 lookup keys.

Packed and parsed here with `struct` and sent on the raw socket (`transport`): the
fixed rtmsg header says table, protocol and type, so a dump is filtered on it and only
the routes someone needs are decoded further. `RtMsg` stays for the monitor, which
decodes notifications with pyroute2.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
)
from typing import Any, Literal

from pyroute2.netlink import nlmsg

from ecmpd.kernel.transport import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NetlinkError,
    attr,
    attr_u8,
    attr_u32,
    get_u32,
    netlink_for,
    parse_attrs,
)
from ecmpd.model import (
    MAIN_TABLE,
    RTPROT_ECMPD,
    RTPROT_FRR_STATIC,
    RTPROT_KERNEL,
    IPAddress,
    IPNetwork,
    Route,
)

__all__ = ["NetlinkError", "RouteLookupError"]

RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTNH_F_ONLINK = 4
RTM_F_CLONED = 0x200
RTM_F_LOOKUP_TABLE = 0x1000  # report the table the lookup hit, not always main
RT_TABLE_COMPAT = 252
RT_SCOPE_NOWHERE = 255
RTN_UNICAST = 1

RTA_DST, RTA_SRC, RTA_IIF, RTA_OIF, RTA_GATEWAY = 1, 2, 3, 4, 5
RTA_PRIORITY, RTA_PREFSRC, RTA_MULTIPATH, RTA_TABLE, RTA_MARK = 6, 7, 9, 15, 16
RTA_UID, RTA_IP_PROTO, RTA_SPORT, RTA_DPORT, RTA_NH_ID = 25, 27, 28, 29, 30

_RTMSG = struct.Struct("=BBBBBBBBI")  # family dst_len src_len tos table proto scope type flags
_ZERO: dict[int, bytes] = {socket.AF_INET: bytes(4), socket.AF_INET6: bytes(16)}


class RouteLookupError(NetlinkError):
    """RTM_GETROUTE failed: ENETUNREACH, EHOSTUNREACH, EACCES (prohibit), EINVAL (rp_filter)."""


def write_flags(replace: bool) -> int:
    """Netlink flags for creating an object, or creating-or-replacing it."""
    mode = NLM_F_REPLACE if replace else NLM_F_EXCL
    return NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | mode


def to_addr(raw: bytes | None) -> IPAddress | None:
    """An address from its 4 or 16 raw bytes."""
    return None if raw is None else ip_address(bytes(raw))


class RtMsg(nlmsg):  # type: ignore[misc]
    """struct rtmsg for pyroute2 decoding (the monitor); ecmpd's own requests are packed."""

    # pyroute2 caches the compiled attribute table on the class and a subclass would
    # inherit a parent's; a fresh flag makes sure this table is the one used.
    _nlmsg_base__compiled_nla = False

    fields = (
        ("family", "B"),
        ("dst_len", "B"),
        ("src_len", "B"),
        ("tos", "B"),
        ("table", "B"),
        ("proto", "B"),
        ("scope", "B"),
        ("type", "B"),
        ("flags", "I"),
    )
    nla_map = (
        (1, "RTA_DST", "cdata"),
        (2, "RTA_SRC", "cdata"),
        (3, "RTA_IIF", "uint32"),
        (4, "RTA_OIF", "uint32"),
        (5, "RTA_GATEWAY", "cdata"),
        (6, "RTA_PRIORITY", "uint32"),
        (7, "RTA_PREFSRC", "cdata"),
        (15, "RTA_TABLE", "uint32"),
        (16, "RTA_MARK", "uint32"),
        (25, "RTA_UID", "uint32"),
        (27, "RTA_IP_PROTO", "uint8"),
        (28, "RTA_SPORT", "be16"),
        (29, "RTA_DPORT", "be16"),
        (30, "RTA_NH_ID", "uint32"),
    )


@dataclass(frozen=True)
class KernelRoute:
    """A route as dumped, with RTA_NH_ID parsed."""

    family: int
    table: int
    dst: IPNetwork
    type: int
    protocol: int
    scope: int
    ifindex: int | None
    gateway: IPAddress | None
    nhid: int | None
    prefsrc: IPAddress | None
    metric: int
    onlink: bool
    # A multipath route's nexthops (RTA_MULTIPATH) as (ifindex, gateway).
    nexthops: tuple[tuple[int, IPAddress | None], ...] = ()


@dataclass(frozen=True)
class RouteLookup:
    """The answer of RTM_GETROUTE: where the kernel would send a packet."""

    type: int
    table: int
    ifindex: int | None
    gateway: IPAddress | None
    prefsrc: IPAddress | None
    nhid: int | None  # Linux 6.18 never includes RTA_NH_ID in the answer: always None there


@dataclass
class RouteScan:
    """One family's routes as observe needs them, from a single dump."""

    owned: list[KernelRoute] = field(default_factory=list)  # protocol RTPROT_ECMPD
    main_defaults: list[KernelRoute] = field(default_factory=list)  # main table, /0
    bgp_defaults: list[KernelRoute] = field(default_factory=list)  # main, /0, proto bgp
    tables: set[int] = field(default_factory=set)  # checked tables holding foreign routes


def _network(family: int, raw: bytes | None, prefixlen: int) -> IPNetwork:
    """The destination network (RTA_DST absent means the default route)."""
    addr = raw if raw is not None else _ZERO[family]
    if family == socket.AF_INET:
        return IPv4Network((addr, prefixlen), strict=False)
    return IPv6Network((addr, prefixlen), strict=False)


def parse_route(payload: bytes) -> KernelRoute | None:
    """A KernelRoute from an RTM_NEWROUTE payload; None for route-cache (cloned) entries."""
    family, dst_len, _, _, table, proto, scope, rtype, flags = _RTMSG.unpack_from(payload)
    if flags & RTM_F_CLONED:
        return None
    attrs = parse_attrs(payload, _RTMSG.size)
    full_table = get_u32(attrs, RTA_TABLE)
    return KernelRoute(
        family=family,
        table=table if full_table is None else full_table,
        dst=_network(family, attrs.get(RTA_DST), dst_len),
        type=rtype,
        protocol=proto,
        scope=scope,
        ifindex=get_u32(attrs, RTA_OIF),
        gateway=to_addr(attrs.get(RTA_GATEWAY)),
        nhid=get_u32(attrs, RTA_NH_ID),
        prefsrc=to_addr(attrs.get(RTA_PREFSRC)),
        metric=get_u32(attrs, RTA_PRIORITY) or 0,
        onlink=bool(flags & RTNH_F_ONLINK),
        nexthops=_multipath(attrs.get(RTA_MULTIPATH)),
    )


_RTNH = struct.Struct("=HBBi")  # struct rtnexthop {len, flags, hops, ifindex}


def _multipath(raw: bytes | None) -> tuple[tuple[int, IPAddress | None], ...]:
    """RTA_MULTIPATH's nexthops: a zebra multipath route names its gateways there."""
    hops: list[tuple[int, IPAddress | None]] = []
    offset = 0
    while raw is not None and offset + _RTNH.size <= len(raw):
        length, _, _, ifindex = _RTNH.unpack_from(raw, offset)
        if length < _RTNH.size:
            break
        inner = parse_attrs(raw[offset : offset + length], _RTNH.size)
        hops.append((ifindex, to_addr(inner.get(RTA_GATEWAY))))
        offset += (length + 3) & ~3
    return tuple(hops)


def _dump(handle: Any, family: int, *, table: int = 0, protocol: int = 0) -> list[bytes]:
    """The payloads of one family's route dump, filtered by the kernel on table/protocol."""
    # The header's table byte holds ids below 256; RTA_TABLE carries any id.
    body = _RTMSG.pack(family, 0, 0, 0, table if table < 256 else 0, protocol, 0, 0, 0)
    if table >= 256:
        body += attr_u32(RTA_TABLE, table)
    try:
        answers = netlink_for(handle).dump(RTM_GETROUTE, body, strict=bool(table or protocol))
    except NetlinkError as e:
        if e.errno == errno.ENOENT and table:
            return []  # IPv4 says so for a table that does not exist (yet): no routes
        raise
    return [p for kind, p in answers if kind == RTM_NEWROUTE]


def dump_routes(handle: Any, family: int, table: int | None = None) -> list[KernelRoute]:
    """Every route of a family (all types), or only those in `table` when given.

    Multipath routes without a nexthop object report ifindex and gateway None.
    """
    routes = (parse_route(p) for p in _dump(handle, family, table=table or 0))
    return [r for r in routes if r is not None]


# Who installs the main-table default routes `gateway: dhcp` / `gateway6: ra` follow:
# boot (`ip route add`, dhclient, pppd), static, ra (the kernel's SLAAC), dhcp
# (NetworkManager, systemd-networkd, dhcpcd). Routing daemons (bgp 186, ospf 188, ...)
# are not asked for: their tables may hold a million routes.
DEFAULT_ROUTE_PROTOCOLS = (3, 4, 9, 16)
RTPROT_BGP = 186
# The default routes that FRR's zebra ranks above an imported one (`announce`): every
# kernel route (distance 0) ecmpd can name the installer of, and FRR's static ones (1).
FOREIGN_DEFAULT_PROTOCOLS = (RTPROT_KERNEL, *DEFAULT_ROUTE_PROTOCOLS, RTPROT_FRR_STATIC)


def main_defaults(handle: Any, family: int, protocols: Collection[int]) -> list[KernelRoute]:
    """The main table's default routes of these protocols: one kernel-filtered dump each
    (a full BGP table in main is walked by the kernel, never transferred)."""
    routes = []
    for proto in protocols:
        for payload in _dump(handle, family, table=MAIN_TABLE, protocol=proto):
            if _RTMSG.unpack_from(payload)[1] == 0 and (route := parse_route(payload)):
                routes.append(route)
    return routes


def scan_routes(
    handle: Any,
    family: int,
    check_tables: Collection[int] = (),
    *,
    defaults: bool = True,
    bgp: bool = False,
) -> RouteScan:
    """What observe needs of one family's routes, each part dumped with a kernel filter.

    Owned routes (one dump by protocol), main-table defaults if `defaults` (one small
    dump per protocol that installs them), and which of `check_tables` hold routes
    ecmpd did not create. A full BGP table costs kernel walks, not a transfer.
    """
    scan = RouteScan()
    scan.owned = [r for p in _dump(handle, family, protocol=RTPROT_ECMPD) if (r := parse_route(p))]
    if defaults:
        scan.main_defaults = main_defaults(handle, family, DEFAULT_ROUTE_PROTOCOLS)
    # Only when an uplink follows BGP (a core, whose BGP table holds the edges' defaults):
    # a full BGP table would be transferred whole (the kernel filters no prefix length).
    if bgp:
        scan.bgp_defaults = main_defaults(handle, family, (RTPROT_BGP,))
    for table in check_tables:
        payloads = _dump(handle, family, table=table)
        if any(_RTMSG.unpack_from(p)[5] != RTPROT_ECMPD for p in payloads):
            scan.tables.add(table)
    return scan


def route_message(
    cmd: Literal["add", "replace", "del"],
    route: Route,
    ifindex: int | None,
    *,
    protocol: int = RTPROT_ECMPD,
) -> tuple[int, int, bytes]:
    """(type, flags, body) that adds, replaces or deletes one route.

    With route.nhid set, device and gateway are not sent: the kernel rejects a nexthop
    id together with either, and takes both from the nexthop object. `del` matches any
    scope but only `protocol`.
    """
    onlink = RTNH_F_ONLINK if route.onlink and route.nhid is None else 0
    header = _RTMSG.pack(
        int(route.family),
        route.dst.prefixlen,
        0,
        0,
        route.table if route.table < 256 else RT_TABLE_COMPAT,
        protocol,
        RT_SCOPE_NOWHERE if cmd == "del" else route.scope,
        route.type.value,
        onlink,
    )
    parts = [header, attr_u32(RTA_TABLE, route.table), attr_u32(RTA_PRIORITY, route.metric)]
    if route.dst.prefixlen:
        parts.append(attr(RTA_DST, route.dst.network_address.packed))
    if route.nhid is not None:
        parts.append(attr_u32(RTA_NH_ID, route.nhid))
    else:
        if ifindex is not None:
            parts.append(attr_u32(RTA_OIF, ifindex))
        if route.gateway is not None:
            parts.append(attr(RTA_GATEWAY, route.gateway.packed))
    if route.prefsrc is not None:
        parts.append(attr(RTA_PREFSRC, route.prefsrc.packed))
    if cmd == "del":
        return RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, b"".join(parts)
    return RTM_NEWROUTE, write_flags(replace=cmd == "replace"), b"".join(parts)


def set_route(
    handle: Any,
    cmd: Literal["add", "replace", "del"],
    route: Route,
    ifindex: int | None,
    *,
    protocol: int = RTPROT_ECMPD,
) -> None:
    """Add, replace or delete one route (see `route_message`); refusals raise NetlinkError."""
    netlink_for(handle).request(*route_message(cmd, route, ifindex, protocol=protocol))


def route_get(
    handle: Any,
    dst: IPv4Address | IPv6Address,
    *,
    src: IPv4Address | IPv6Address | None = None,
    iif: int | None = None,
    oif: int | None = None,
    ip_proto: int | None = None,
    sport: int | None = None,
    dport: int | None = None,
    mark: int | None = None,
    uid: int | None = None,
) -> RouteLookup:
    """Ask the kernel where a flow goes, as `ip route get` does (L4 keys feed the hash)."""
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    src_len = 0 if src is None else src.max_prefixlen
    parts = [
        _RTMSG.pack(family, dst.max_prefixlen, src_len, 0, 0, 0, 0, 0, RTM_F_LOOKUP_TABLE),
        attr(RTA_DST, dst.packed),
    ]
    if src is not None:
        parts.append(attr(RTA_SRC, src.packed))
    packers: tuple[tuple[int, int | None, Callable[[int, int], bytes]], ...] = (
        (RTA_IIF, iif, attr_u32),
        (RTA_OIF, oif, attr_u32),
        (RTA_IP_PROTO, ip_proto, attr_u8),
        (RTA_SPORT, sport, _be16),
        (RTA_DPORT, dport, _be16),
        (RTA_MARK, mark, attr_u32),
        (RTA_UID, uid, attr_u32),
    )
    parts.extend(pack(kind, value) for kind, value, pack in packers if value is not None)
    try:
        answers = netlink_for(handle).request(RTM_GETROUTE, NLM_F_REQUEST, b"".join(parts))
    except NetlinkError as e:
        raise RouteLookupError(e.errno, e.strerror) from e
    (payload,) = (p for kind, p in answers if kind == RTM_NEWROUTE)
    _, _, _, _, table, _, _, rtype, _ = _RTMSG.unpack_from(payload)
    attrs = parse_attrs(payload, _RTMSG.size)
    full_table = get_u32(attrs, RTA_TABLE)
    return RouteLookup(
        type=rtype,
        table=table if full_table is None else full_table,
        ifindex=get_u32(attrs, RTA_OIF),
        gateway=to_addr(attrs.get(RTA_GATEWAY)),
        prefsrc=to_addr(attrs.get(RTA_PREFSRC)),
        nhid=get_u32(attrs, RTA_NH_ID),
    )


def _be16(kind: int, value: int) -> bytes:
    return attr(kind, value.to_bytes(2, "big"))
