"""Nexthop objects and groups over netlink (RTM_*NEXTHOP), which pyroute2 0.9.7 lacks.

Messages are packed and parsed here and sent on the raw socket (`transport`); `NhMsg`
stays for the monitor, which decodes notifications with pyroute2. The route side
(RTA_NH_ID, L4 route lookups) lives in `routemsg` and is re-exported here, so callers
import the whole kernel API from this module.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import nla, nlmsg

from ecmpd.kernel.routemsg import (
    RTNH_F_ONLINK,
    KernelRoute,
    NetlinkError,
    RouteLookup,
    RouteLookupError,
    dump_routes,
    route_get,
    set_route,
    to_addr,
    write_flags,
)
from ecmpd.kernel.transport import (
    NLM_F_ACK,
    NLM_F_REQUEST,
    U16,
    attr,
    attr_nested,
    attr_u16,
    attr_u32,
    get_u32,
    netlink_for,
    parse_attrs,
)
from ecmpd.model import MAX_WEIGHT, RTPROT_ECMPD, GroupType, IPAddress, Nexthop, NexthopGroup

__all__ = [
    "KernelNexthop",
    "KernelRoute",
    "NetlinkError",
    "RouteLookup",
    "RouteLookupError",
    "delete_nexthop",
    "dump_nexthops",
    "dump_routes",
    "get_nexthop",
    "route_get",
    "set_group",
    "set_nexthop",
    "set_route",
]

RTM_NEWNEXTHOP = 104
RTM_DELNEXTHOP = 105
RTM_GETNEXTHOP = 106
NEXTHOP_GRP_TYPE_MPATH = 0
NEXTHOP_GRP_TYPE_RES = 1
CLOCK_T_HZ = 100  # USER_HZ: the unit of the resilient group timers on the wire
NHA_ID, NHA_GROUP, NHA_GROUP_TYPE, NHA_BLACKHOLE, NHA_OIF, NHA_GATEWAY = 1, 2, 3, 4, 5, 6
NHA_RES_GROUP = 12
NHA_RES_GROUP_BUCKETS, NHA_RES_GROUP_IDLE_TIMER, NHA_RES_GROUP_UNBALANCED_TIMER = 1, 2, 3
_NHMSG = struct.Struct("=BBBBI")  # struct nhmsg {family, scope, protocol, resvd, flags}
_GRP_ENTRY = struct.Struct("=IBBH")  # struct nexthop_grp {id, weight, weight_high, resvd2}


class NhMsg(nlmsg):  # type: ignore[misc]
    """struct nhmsg for pyroute2 decoding (the monitor); ecmpd's own requests are packed."""

    # pyroute2 caches the compiled attribute table on the class (inherited by
    # subclasses); a fresh flag makes sure this table is the one used.
    _nlmsg_base__compiled_nla = False

    fields = (
        ("family", "B"),
        ("scope", "B"),
        ("protocol", "B"),
        ("resvd", "B"),
        ("flags", "I"),
    )
    nla_map = (
        (1, "NHA_ID", "uint32"),
        (2, "NHA_GROUP", "cdata"),
        (3, "NHA_GROUP_TYPE", "uint16"),
        (4, "NHA_BLACKHOLE", "flag"),
        (5, "NHA_OIF", "uint32"),
        (6, "NHA_GATEWAY", "cdata"),
        # The kernel parses the resilient parameters only as a nested attribute.
        (12, "NHA_RES_GROUP", "res_group|nested"),
    )

    class res_group(nla):  # type: ignore[misc]
        """NHA_RES_GROUP: resilient group parameters, timers in clock_t."""

        _nlmsg_base__compiled_nla = False
        nla_map = (
            (1, "NHA_RES_GROUP_BUCKETS", "uint16"),
            (2, "NHA_RES_GROUP_IDLE_TIMER", "uint32"),
            (3, "NHA_RES_GROUP_UNBALANCED_TIMER", "uint32"),
            (4, "NHA_RES_GROUP_UNBALANCED_TIME", "uint64"),
        )


@dataclass(frozen=True)
class KernelNexthop:
    """One nexthop object or group as the kernel reports it."""

    id: int
    protocol: int
    family: int  # AF_INET/AF_INET6; groups report AF_UNSPEC (0)
    ifindex: int | None
    gateway: IPAddress | None
    onlink: bool
    blackhole: bool
    members: tuple[tuple[int, int], ...] | None  # groups: (id, weight 1..256) by id
    group_type: GroupType | None
    buckets: int  # resilient only, like the timers (whole seconds); 0 otherwise
    idle_timer: int
    unbalanced_timer: int


def _check_id(nhid: int) -> None:
    """Reject ids outside u32 and 0 (which would ask the kernel to pick one)."""
    if not 0 < nhid <= 0xFFFFFFFF:
        raise ValueError(f"nexthop id {nhid} is not in 1..2^32-1")


def _seconds(clock_t: int | None) -> int:
    """Whole seconds from a clock_t timer value."""
    return 0 if clock_t is None else (clock_t + CLOCK_T_HZ // 2) // CLOCK_T_HZ


def _members(raw: bytes) -> tuple[tuple[int, int], ...]:
    """(id, weight) pairs from NHA_GROUP; the wire holds weight-1, high byte apart."""
    entries = _GRP_ENTRY.iter_unpack(raw)
    return tuple(sorted((nid, (high << 8 | low) + 1) for nid, low, high, _ in entries))


def _resilient(raw: bytes | None) -> tuple[int, int, int]:
    """(buckets, idle timer s, unbalanced timer s) from NHA_RES_GROUP, zeros without it."""
    if raw is None:
        return (0, 0, 0)
    res = parse_attrs(raw)
    buckets = res.get(NHA_RES_GROUP_BUCKETS)
    return (
        0 if buckets is None else int(U16.unpack_from(buckets)[0]),
        _seconds(get_u32(res, NHA_RES_GROUP_IDLE_TIMER)),
        _seconds(get_u32(res, NHA_RES_GROUP_UNBALANCED_TIMER)),
    )


def parse_nexthop(payload: bytes) -> KernelNexthop:
    """A KernelNexthop from an RTM_NEWNEXTHOP payload."""
    family, _, protocol, _, flags = _NHMSG.unpack_from(payload)
    attrs = parse_attrs(payload, _NHMSG.size)
    raw_group = attrs.get(NHA_GROUP)
    group_type = None
    if raw_group is not None:
        kind = attrs.get(NHA_GROUP_TYPE)
        resilient = kind is not None and U16.unpack_from(kind)[0] == NEXTHOP_GRP_TYPE_RES
        group_type = GroupType.RESILIENT if resilient else GroupType.HASH_THRESHOLD
    buckets, idle, unbalanced = _resilient(attrs.get(NHA_RES_GROUP))
    return KernelNexthop(
        id=get_u32(attrs, NHA_ID) or 0,
        protocol=protocol,
        family=family,
        ifindex=get_u32(attrs, NHA_OIF),
        gateway=to_addr(attrs.get(NHA_GATEWAY)),
        onlink=bool(flags & RTNH_F_ONLINK),
        blackhole=NHA_BLACKHOLE in attrs,
        members=None if raw_group is None else _members(raw_group),
        group_type=group_type,
        buckets=buckets,
        idle_timer=idle,
        unbalanced_timer=unbalanced,
    )


def dump_nexthops(handle: Any) -> list[KernelNexthop]:
    """Every nexthop object and group in the namespace, whoever created it."""
    body = _NHMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    answers = netlink_for(handle).dump(RTM_GETNEXTHOP, body)
    return [parse_nexthop(p) for kind, p in answers if kind == RTM_NEWNEXTHOP]


def get_nexthop(handle: Any, nhid: int) -> KernelNexthop | None:
    """One nexthop object or group by id, None if there is none."""
    _check_id(nhid)
    body = _NHMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr_u32(NHA_ID, nhid)
    try:
        answers = netlink_for(handle).request(RTM_GETNEXTHOP, NLM_F_REQUEST, body)
    except NetlinkError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    (payload,) = (p for kind, p in answers if kind == RTM_NEWNEXTHOP)
    return parse_nexthop(payload)


def nexthop_message(
    nh: Nexthop, ifindex: int, *, replace: bool, protocol: int = RTPROT_ECMPD
) -> tuple[int, int, bytes]:
    """(type, flags, body) creating (or replacing in place) a plain nexthop."""
    _check_id(nh.id)
    flags = RTNH_F_ONLINK if nh.onlink else 0
    parts = [
        _NHMSG.pack(int(nh.family), 0, protocol, 0, flags),
        attr_u32(NHA_ID, nh.id),
        attr_u32(NHA_OIF, ifindex),
    ]
    if nh.gateway is not None:
        parts.append(attr(NHA_GATEWAY, nh.gateway.packed))
    return RTM_NEWNEXTHOP, write_flags(replace), b"".join(parts)


def group_message(
    group: NexthopGroup, *, replace: bool, protocol: int = RTPROT_ECMPD
) -> tuple[int, int, bytes]:
    """(type, flags, body) creating a group, or replacing its members and timers in place."""
    _check_id(group.id)
    entries = []
    for nid, weight in group.members:
        _check_id(nid)
        if not 1 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight {weight} of nexthop {nid} is not in 1..{MAX_WEIGHT}")
        entries.append(_GRP_ENTRY.pack(nid, (weight - 1) & 0xFF, (weight - 1) >> 8, 0))
    resilient = group.type is GroupType.RESILIENT
    parts = [
        _NHMSG.pack(socket.AF_UNSPEC, 0, protocol, 0, 0),
        attr_u32(NHA_ID, group.id),
        attr(NHA_GROUP, b"".join(entries)),
        attr_u16(NHA_GROUP_TYPE, NEXTHOP_GRP_TYPE_RES if resilient else NEXTHOP_GRP_TYPE_MPATH),
    ]
    if resilient:
        res = (
            attr_u16(NHA_RES_GROUP_BUCKETS, group.buckets)
            + attr_u32(NHA_RES_GROUP_IDLE_TIMER, group.idle_timer * CLOCK_T_HZ)
            + attr_u32(NHA_RES_GROUP_UNBALANCED_TIMER, group.unbalanced_timer * CLOCK_T_HZ)
        )
        parts.append(attr_nested(NHA_RES_GROUP, res))
    return RTM_NEWNEXTHOP, write_flags(replace), b"".join(parts)


def delete_message(nhid: int) -> tuple[int, int, bytes]:
    """(type, flags, body) deleting a nexthop object or group."""
    _check_id(nhid)
    body = _NHMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr_u32(NHA_ID, nhid)
    return RTM_DELNEXTHOP, NLM_F_REQUEST | NLM_F_ACK, body


def set_nexthop(
    handle: Any, nh: Nexthop, ifindex: int, *, replace: bool, protocol: int = RTPROT_ECMPD
) -> None:
    """Create (or replace in place) a plain nexthop: a gateway, or none for p2p, on a device."""
    message = nexthop_message(nh, ifindex, replace=replace, protocol=protocol)
    netlink_for(handle).request(*message)


def set_group(
    handle: Any, group: NexthopGroup, *, replace: bool, protocol: int = RTPROT_ECMPD
) -> None:
    """Create a group, or replace its members and weights (and resilient timers) in place.

    The kernel refuses (EINVAL) to change a group's type or a resilient group's bucket
    count in place: `NexthopGroup.immutable()` changing needs delete and re-create.
    """
    netlink_for(handle).request(*group_message(group, replace=replace, protocol=protocol))


def delete_nexthop(handle: Any, nhid: int) -> None:
    """Delete a nexthop object or group; NetlinkError(ENOENT) when it does not exist."""
    netlink_for(handle).request(*delete_message(nhid))
