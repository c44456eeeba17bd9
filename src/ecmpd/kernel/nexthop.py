"""Nexthop objects and groups over netlink (RTM_*NEXTHOP), which pyroute2 0.9.7 lacks.

The route side (RTA_NH_ID, L4 route lookups) lives in `routemsg` and is re-exported
here, so callers import the whole kernel API from this module.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, nla, nlmsg

from ecmpd.kernel.routemsg import (
    RTNH_F_ONLINK,
    KernelRoute,
    NetlinkError,
    RouteLookup,
    RouteLookupError,
    dump_routes,
    nl_request,
    redecode,
    route_get,
    set_route,
    to_addr,
    write_flags,
)
from ecmpd.model import RTPROT_ECMPD, GroupType, IPAddress, Nexthop, NexthopGroup

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
MAX_WEIGHT = 256
_GRP_ENTRY = struct.Struct("=IBBH")  # struct nexthop_grp {id, weight, weight_high, resvd2}


class NhMsg(nlmsg):  # type: ignore[misc]
    """struct nhmsg and the NHA_* attributes ecmpd uses (numbers from uapi nexthop.h)."""

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
    entries = _GRP_ENTRY.iter_unpack(bytes(raw))
    return tuple(sorted((nid, (high << 8 | low) + 1) for nid, low, high, _ in entries))


def _resilient(res: Any) -> tuple[int, int, int]:
    """(buckets, idle timer s, unbalanced timer s) from NHA_RES_GROUP, zeros without it."""
    if res is None:
        return (0, 0, 0)
    return (
        res.get_attr("NHA_RES_GROUP_BUCKETS") or 0,
        _seconds(res.get_attr("NHA_RES_GROUP_IDLE_TIMER")),
        _seconds(res.get_attr("NHA_RES_GROUP_UNBALANCED_TIMER")),
    )


def _kernel_nexthop(msg: Any) -> KernelNexthop:
    """A KernelNexthop from a decoded RTM_NEWNEXTHOP."""
    raw_group = msg.get_attr("NHA_GROUP")
    group_type = None
    if raw_group is not None:
        kind = msg.get_attr("NHA_GROUP_TYPE") or NEXTHOP_GRP_TYPE_MPATH
        resilient = kind == NEXTHOP_GRP_TYPE_RES
        group_type = GroupType.RESILIENT if resilient else GroupType.HASH_THRESHOLD
    buckets, idle, unbalanced = _resilient(msg.get_attr("NHA_RES_GROUP"))
    return KernelNexthop(
        id=msg.get_attr("NHA_ID"),
        protocol=msg["protocol"],
        family=msg["family"],
        ifindex=msg.get_attr("NHA_OIF"),
        gateway=to_addr(msg.get_attr("NHA_GATEWAY")),
        onlink=bool(msg["flags"] & RTNH_F_ONLINK),
        blackhole=msg.get_attr("NHA_BLACKHOLE") is not None,
        members=None if raw_group is None else _members(raw_group),
        group_type=group_type,
        buckets=buckets,
        idle_timer=idle,
        unbalanced_timer=unbalanced,
    )


def dump_nexthops(ipr: IPRoute) -> list[KernelNexthop]:
    """Every nexthop object and group in the namespace, whoever created it."""
    req = NhMsg()
    req["family"] = socket.AF_UNSPEC
    answers = nl_request(ipr, req, RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_DUMP)
    return [_kernel_nexthop(msg) for msg in redecode(NhMsg, answers, RTM_NEWNEXTHOP)]


def get_nexthop(ipr: IPRoute, nhid: int) -> KernelNexthop | None:
    """One nexthop object or group by id, None if there is none."""
    _check_id(nhid)
    req = NhMsg()
    req["attrs"] = [["NHA_ID", nhid]]
    try:
        answers = nl_request(ipr, req, RTM_GETNEXTHOP, NLM_F_REQUEST)
    except NetlinkError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    (msg,) = redecode(NhMsg, answers, RTM_NEWNEXTHOP)
    return _kernel_nexthop(msg)


def set_nexthop(
    ipr: IPRoute, nh: Nexthop, ifindex: int, *, replace: bool, protocol: int = RTPROT_ECMPD
) -> None:
    """Create (or replace in place) a plain nexthop: a gateway, or none for p2p, on a device."""
    _check_id(nh.id)
    req = NhMsg()
    req["family"] = int(nh.family)
    req["protocol"] = protocol
    req["flags"] = RTNH_F_ONLINK if nh.onlink else 0
    attrs: list[list[Any]] = [["NHA_ID", nh.id], ["NHA_OIF", ifindex]]
    if nh.gateway is not None:
        attrs.append(["NHA_GATEWAY", nh.gateway.packed])
    req["attrs"] = attrs
    nl_request(ipr, req, RTM_NEWNEXTHOP, write_flags(replace))


def set_group(
    ipr: IPRoute, group: NexthopGroup, *, replace: bool, protocol: int = RTPROT_ECMPD
) -> None:
    """Create a group, or replace its members and weights (and resilient timers) in place.

    The kernel refuses (EINVAL) to change a group's type or a resilient group's bucket
    count in place: `NexthopGroup.immutable()` changing needs delete and re-create.
    """
    _check_id(group.id)
    entries = b""
    for nid, weight in group.members:
        _check_id(nid)
        if not 1 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight {weight} of nexthop {nid} is not in 1..{MAX_WEIGHT}")
        entries += _GRP_ENTRY.pack(nid, (weight - 1) & 0xFF, (weight - 1) >> 8, 0)
    resilient = group.type is GroupType.RESILIENT
    req = NhMsg()
    req["family"] = socket.AF_UNSPEC
    req["protocol"] = protocol
    attrs: list[list[Any]] = [
        ["NHA_ID", group.id],
        ["NHA_GROUP", entries],
        ["NHA_GROUP_TYPE", NEXTHOP_GRP_TYPE_RES if resilient else NEXTHOP_GRP_TYPE_MPATH],
    ]
    if resilient:
        res = [
            ["NHA_RES_GROUP_BUCKETS", group.buckets],
            ["NHA_RES_GROUP_IDLE_TIMER", group.idle_timer * CLOCK_T_HZ],
            ["NHA_RES_GROUP_UNBALANCED_TIMER", group.unbalanced_timer * CLOCK_T_HZ],
        ]
        attrs.append(["NHA_RES_GROUP", {"attrs": res}])
    req["attrs"] = attrs
    nl_request(ipr, req, RTM_NEWNEXTHOP, write_flags(replace))


def delete_nexthop(ipr: IPRoute, nhid: int) -> None:
    """Delete a nexthop object or group; NetlinkError(ENOENT) when it does not exist."""
    _check_id(nhid)
    req = NhMsg()
    req["attrs"] = [["NHA_ID", nhid]]
    nl_request(ipr, req, RTM_DELNEXTHOP, NLM_F_REQUEST | NLM_F_ACK)
