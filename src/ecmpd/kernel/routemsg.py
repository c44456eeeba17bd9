"""Route messages with the attributes pyroute2 0.9.7 drops: RTA_NH_ID and L4 lookup keys.

Also the request plumbing `nexthop` shares: sending on an `IPRoute`, typed errors,
and re-decoding received messages with our own classes.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any, Literal

from pyroute2 import IPRoute
from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    nlmsg,
)
from pyroute2.netlink.exceptions import NetlinkError as PyNetlinkError

from ecmpd.model import RTPROT_ECMPD, IPAddress, IPNetwork, Route

RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTNH_F_ONLINK = 4
RTM_F_CLONED = 0x200
RTM_F_LOOKUP_TABLE = 0x1000  # report the table the lookup hit, not always main
RT_TABLE_COMPAT = 252
RT_SCOPE_NOWHERE = 255


class NetlinkError(OSError):
    """A request the kernel refused: `errno` is the kernel's error code."""


class RouteLookupError(NetlinkError):
    """RTM_GETROUTE failed: ENETUNREACH, EHOSTUNREACH, EACCES (prohibit), EINVAL (rp_filter)."""


def nl_request(ipr: IPRoute, msg: Any, msg_type: int, flags: int) -> list[Any]:
    """Send one request on `ipr` and return every answer; kernel refusals raise NetlinkError."""
    # IPRoute 0.9.7 has no 'nlm_generator' status, so nlm_request raises KeyError without
    # it; with either value, draining the result sends the request and reads all answers.
    ipr.status.setdefault("nlm_generator", False)
    try:
        return list(ipr.nlm_request(msg, msg_type=msg_type, msg_flags=flags))
    except PyNetlinkError as e:
        # pyroute2 fills args[1] with the kernel's message or strerror(code).
        raise NetlinkError(e.code, str(e.args[1])) from e


def write_flags(replace: bool) -> int:
    """Netlink flags for creating an object, or creating-or-replacing it."""
    mode = NLM_F_REPLACE if replace else NLM_F_EXCL
    return int(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | mode)


def redecode(cls: Any, msgs: list[Any], msg_type: int) -> list[Any]:
    """Decode received messages of one type again with our class.

    pyroute2's marshal decodes with its own tables (no RTA_NH_ID, no nexthop messages);
    the raw datagram is still there, so decode it again instead of patching `ipr`.
    """
    out = []
    for msg in msgs:
        if msg["header"]["type"] == msg_type:
            mine = cls(msg.data, offset=msg.offset)
            mine.decode()
            out.append(mine)
    return out


def to_addr(raw: bytes | None) -> IPAddress | None:
    """An address from its 4 or 16 raw bytes."""
    return None if raw is None else ip_address(bytes(raw))


class RtMsg(nlmsg):  # type: ignore[misc]
    """struct rtmsg with the attributes ecmpd reads and writes (explicit kernel numbers)."""

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


@dataclass(frozen=True)
class RouteLookup:
    """The answer of RTM_GETROUTE: where the kernel would send a packet."""

    type: int
    table: int
    ifindex: int | None
    gateway: IPAddress | None
    prefsrc: IPAddress | None
    nhid: int | None  # Linux 6.18 never includes RTA_NH_ID in the answer: always None there


def _table(msg: Any) -> int:
    """The full table id: RTA_TABLE when present, else the u8 rtm_table."""
    table = msg.get_attr("RTA_TABLE")
    return int(msg["table"] if table is None else table)


def _kernel_route(msg: Any) -> KernelRoute:
    """A KernelRoute from a decoded RTM_NEWROUTE."""
    family = msg["family"]
    raw_dst = msg.get_attr("RTA_DST")
    dst_addr = to_addr(raw_dst) or ip_address(0 if family == socket.AF_INET else "::")
    return KernelRoute(
        family=family,
        table=_table(msg),
        dst=ip_network(f"{dst_addr}/{msg['dst_len']}", strict=False),
        type=msg["type"],
        protocol=msg["proto"],
        scope=msg["scope"],
        ifindex=msg.get_attr("RTA_OIF"),
        gateway=to_addr(msg.get_attr("RTA_GATEWAY")),
        nhid=msg.get_attr("RTA_NH_ID"),
        prefsrc=to_addr(msg.get_attr("RTA_PREFSRC")),
        metric=msg.get_attr("RTA_PRIORITY") or 0,
        onlink=bool(msg["flags"] & RTNH_F_ONLINK),
    )


def dump_routes(ipr: IPRoute, family: int, table: int | None = None) -> list[KernelRoute]:
    """Every route of a family (all types), or only those in `table` when given.

    Multipath routes without a nexthop object report ifindex and gateway None.
    """
    req = RtMsg()
    req["family"] = family
    answers = nl_request(ipr, req, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP)
    routes = []
    for msg in redecode(RtMsg, answers, RTM_NEWROUTE):
        # Cloned entries are the route cache, not routes anyone configured.
        if msg["flags"] & RTM_F_CLONED:
            continue
        route = _kernel_route(msg)
        if table is None or route.table == table:
            routes.append(route)
    return routes


def set_route(
    ipr: IPRoute,
    cmd: Literal["add", "replace", "del"],
    route: Route,
    ifindex: int | None,
    *,
    protocol: int = RTPROT_ECMPD,
) -> None:
    """Add, replace or delete one route; with route.nhid set, device and gateway are not sent.

    The kernel rejects a nexthop id together with a device or gateway, and a route with
    a nexthop object takes both from it. `del` matches any scope but only `protocol`.
    """
    req = RtMsg()
    req["family"] = int(route.family)
    req["dst_len"] = route.dst.prefixlen
    req["table"] = route.table if route.table < 256 else RT_TABLE_COMPAT
    req["proto"] = protocol
    req["scope"] = RT_SCOPE_NOWHERE if cmd == "del" else route.scope
    req["type"] = route.type.value
    attrs: list[list[Any]] = [["RTA_TABLE", route.table], ["RTA_PRIORITY", route.metric]]
    if route.dst.prefixlen:
        attrs.append(["RTA_DST", route.dst.network_address.packed])
    if route.nhid is not None:
        attrs.append(["RTA_NH_ID", route.nhid])
    else:
        if ifindex is not None:
            attrs.append(["RTA_OIF", ifindex])
        if route.gateway is not None:
            attrs.append(["RTA_GATEWAY", route.gateway.packed])
        req["flags"] = RTNH_F_ONLINK if route.onlink else 0
    if route.prefsrc is not None:
        attrs.append(["RTA_PREFSRC", route.prefsrc.packed])
    req["attrs"] = attrs
    if cmd == "del":
        nl_request(ipr, req, RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK)
    else:
        nl_request(ipr, req, RTM_NEWROUTE, write_flags(replace=cmd == "replace"))


def route_get(
    ipr: IPRoute,
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
    req = RtMsg()
    req["family"] = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    req["dst_len"] = dst.max_prefixlen
    req["flags"] = RTM_F_LOOKUP_TABLE
    attrs: list[list[Any]] = [["RTA_DST", dst.packed]]
    if src is not None:
        req["src_len"] = src.max_prefixlen
        attrs.append(["RTA_SRC", src.packed])
    optional = (
        ("RTA_IIF", iif),
        ("RTA_OIF", oif),
        ("RTA_IP_PROTO", ip_proto),
        ("RTA_SPORT", sport),
        ("RTA_DPORT", dport),
        ("RTA_MARK", mark),
        ("RTA_UID", uid),
    )
    attrs.extend([name, value] for name, value in optional if value is not None)
    req["attrs"] = attrs
    try:
        answers = nl_request(ipr, req, RTM_GETROUTE, NLM_F_REQUEST)
    except NetlinkError as e:
        raise RouteLookupError(e.errno, e.strerror) from e
    (msg,) = redecode(RtMsg, answers, RTM_NEWROUTE)
    return RouteLookup(
        type=msg["type"],
        table=_table(msg),
        ifindex=msg.get_attr("RTA_OIF"),
        gateway=to_addr(msg.get_attr("RTA_GATEWAY")),
        prefsrc=to_addr(msg.get_attr("RTA_PREFSRC")),
        nhid=msg.get_attr("RTA_NH_ID"),
    )
