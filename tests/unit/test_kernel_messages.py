"""ecmpd's own netlink messages pack to the very bytes pyroute2 encoded before; the kernel
writer is built without touching its socket. No namespace needed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path
from typing import Any

from pyroute2.netlink.rtnl.fibmsg import fibmsg

from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.apply import KernelWriter
from ecmpd.kernel.nexthop import NhMsg
from ecmpd.kernel.record import Record
from ecmpd.kernel.routemsg import (
    RtMsg,
    route_message,
)
from ecmpd.kernel.rules import rule_message
from ecmpd.model import (
    NH_ID_BASE,
    RTPROT_ECMPD,
    Family,
    GroupType,
    Nexthop,
    NexthopGroup,
    PortRange,
    Route,
    RouteType,
    Rule,
    RuleAction,
)

NH1, NH2, GROUP = (NH_ID_BASE + n for n in (1, 2, 100))


def _pyroute2_bytes(msg: Any) -> bytes:
    """The body pyroute2 encodes for a message (its nlmsghdr cut off)."""
    msg.encode()
    return bytes(msg.data[16:])


def _ref_route(cmd: str, route: Route, ifindex: int | None) -> bytes:
    req = RtMsg()
    req["family"] = int(route.family)
    req["dst_len"] = route.dst.prefixlen
    req["table"] = route.table if route.table < 256 else 252
    req["proto"] = RTPROT_ECMPD
    req["scope"] = 255 if cmd == "del" else route.scope
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
        req["flags"] = 4 if route.onlink else 0
    if route.prefsrc is not None:
        attrs.append(["RTA_PREFSRC", route.prefsrc.packed])
    req["attrs"] = attrs
    return _pyroute2_bytes(req)


def _ref_nexthop(nh: Nexthop, ifindex: int) -> bytes:
    req = NhMsg()
    req["family"] = int(nh.family)
    req["protocol"] = RTPROT_ECMPD
    req["flags"] = 4 if nh.onlink else 0
    attrs: list[list[Any]] = [["NHA_ID", nh.id], ["NHA_OIF", ifindex]]
    if nh.gateway is not None:
        attrs.append(["NHA_GATEWAY", nh.gateway.packed])
    req["attrs"] = attrs
    return _pyroute2_bytes(req)


def _ref_group(group: NexthopGroup) -> bytes:
    entries = b"".join(
        (nid).to_bytes(4, "little") + bytes(((w - 1) & 0xFF, (w - 1) >> 8, 0, 0))
        for nid, w in group.members
    )
    resilient = group.type is GroupType.RESILIENT
    req = NhMsg()
    req["protocol"] = RTPROT_ECMPD
    attrs: list[list[Any]] = [
        ["NHA_ID", group.id],
        ["NHA_GROUP", entries],
        ["NHA_GROUP_TYPE", 1 if resilient else 0],
    ]
    if resilient:
        res = [
            ["NHA_RES_GROUP_BUCKETS", group.buckets],
            ["NHA_RES_GROUP_IDLE_TIMER", group.idle_timer * 100],
            ["NHA_RES_GROUP_UNBALANCED_TIMER", group.unbalanced_timer * 100],
        ]
        attrs.append(["NHA_RES_GROUP", {"attrs": res}])
    req["attrs"] = attrs
    return _pyroute2_bytes(req)


def _ref_rule(rule: Rule) -> bytes:
    msg = fibmsg()
    msg["family"] = int(rule.family)
    msg["action"] = rule.action.value
    attrs: list[tuple[str, Any]] = [("FRA_PRIORITY", rule.priority), ("FRA_PROTOCOL", 236)]
    if rule.table is not None:
        msg["table"] = rule.table if rule.table < 256 else 252
        attrs.append(("FRA_TABLE", rule.table))
    if rule.src is not None:
        msg["src_len"] = rule.src.prefixlen
        attrs.append(("FRA_SRC", str(rule.src.network_address)))
    if rule.dst is not None:
        msg["dst_len"] = rule.dst.prefixlen
        attrs.append(("FRA_DST", str(rule.dst.network_address)))
    if rule.iif is not None:
        attrs.append(("FRA_IIFNAME", rule.iif))
    if rule.fwmark is not None:
        attrs.append(("FRA_FWMARK", rule.fwmark))
    if rule.fwmask is not None:
        attrs.append(("FRA_FWMASK", rule.fwmask))
    if rule.ip_proto is not None:
        attrs.append(("FRA_IP_PROTO", rule.ip_proto))
    if rule.sport is not None:
        attrs.append(("FRA_SPORT_RANGE", f"{rule.sport.start}:{rule.sport.end}"))
    if rule.dport is not None:
        attrs.append(("FRA_DPORT_RANGE", f"{rule.dport.start}:{rule.dport.end}"))
    if rule.suppress_prefixlength is not None:
        attrs.append(("FRA_SUPPRESS_PREFIXLEN", rule.suppress_prefixlength))
    msg["attrs"] = attrs
    return _pyroute2_bytes(msg)


def _random_routes(rng: random.Random) -> Iterator[Route]:
    for _ in range(200):
        v6 = rng.random() < 0.4
        family = Family.INET6 if v6 else Family.INET
        bits = 128 if v6 else 32
        plen = rng.choice((0, 8, 16, 24, bits))
        base = f"2001:db8:{rng.randrange(65536):x}::" if v6 else f"10.{rng.randrange(256)}.0.0"
        gw = IPv6Address("2001:db8::1") if v6 else IPv4Address("10.0.0.1")
        nhid = rng.choice((None, NH1, GROUP))
        yield Route(
            family=family,
            table=rng.choice((100, 200, 252, 254, 1000, 70000)),
            dst=ip_network(f"{base}/{plen}", strict=False),
            type=rng.choice((RouteType.UNICAST, RouteType.UNREACHABLE)),
            ifname=None,
            gateway=gw if nhid is None and rng.random() < 0.7 else None,
            nhid=nhid,
            prefsrc=rng.choice((None, IPv4Address("10.0.0.2"))) if not v6 else None,
            scope=rng.choice((0, 253)),
            metric=rng.choice((0, 10, 1024)),
            onlink=rng.random() < 0.3,
        )


def test_packed_messages_equal_pyroute2s_encoding() -> None:
    """Routes, nexthops, groups and rules pack to the very bytes pyroute2 encoded before."""
    rng = random.Random(0xECD)
    for route in _random_routes(rng):
        ifindex = rng.choice((None, 7))
        for cmd in ("add", "replace", "del"):
            _, _, body = route_message(cmd, route, ifindex)
            assert body == _ref_route(cmd, route, ifindex), (cmd, route)
    for nh in (
        Nexthop(NH1, Family.INET, "u1", gateway=IPv4Address("10.0.1.2")),
        Nexthop(NH2, Family.INET, "u2"),
        Nexthop(NH1, Family.INET, "u1", gateway=IPv4Address("192.0.2.1"), onlink=True),
        Nexthop(NH2, Family.INET6, "u2", gateway=IPv6Address("2001:db8::2")),
    ):
        assert nl.nexthop_message(nh, 5, replace=False)[2] == _ref_nexthop(nh, 5)
    for group in (
        NexthopGroup(GROUP, GroupType.HASH_THRESHOLD, ((NH1, 1), (NH2, 256))),
        NexthopGroup(GROUP, GroupType.RESILIENT, tuple((NH1 + i, i + 1) for i in range(64)), 512),
        NexthopGroup(GROUP, GroupType.RESILIENT, ((NH1, 3),), 128, 60, 15),
    ):
        assert nl.group_message(group, replace=True)[2] == _ref_group(group)
    for rule in (
        Rule(Family.INET, 10000, RuleAction.LOOKUP, table=101, src=ip_network("10.1.0.2/32")),
        Rule(Family.INET, 10100, RuleAction.LOOKUP, table=254, suppress_prefixlength=0),
        Rule(Family.INET, 10110, RuleAction.LOOKUP, table=70000, iif="lan0"),
        Rule(Family.INET, 10120, RuleAction.UNREACHABLE, dst=ip_network("203.0.113.0/28")),
        Rule(
            Family.INET6,
            10130,
            RuleAction.LOOKUP,
            table=200,
            src=ip_network("2001:db8::/48"),
            fwmark=0x10,
            fwmask=0xFF,
            ip_proto=6,
            sport=PortRange(1000, 2000),
            dport=PortRange(443, 443),
        ),
    ):
        assert rule_message(rule) == _ref_rule(rule), rule


def test_writer_is_built_without_touching_pyroute2() -> None:
    """The daemon builds it on its event-loop thread, where pyroute2's sync API must not run."""

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"ipr.{name} used at construction")

    async def build() -> KernelWriter:
        return KernelWriter(Untouchable(), Record(Path("/nonexistent")))

    asyncio.run(build()).close()
