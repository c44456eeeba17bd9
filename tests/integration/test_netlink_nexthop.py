"""Nexthop, route and route-get netlink messages against the real kernel, in throwaway netns."""

from __future__ import annotations

import errno
import json
import os
import random
import secrets
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import Any

import pytest
from pyroute2 import IPRoute

from ecmpd.kernel.nexthop import (
    KernelNexthop,
    NetlinkError,
    RouteLookupError,
    delete_nexthop,
    dump_nexthops,
    dump_routes,
    get_nexthop,
    route_get,
    set_group,
    set_nexthop,
    set_route,
)
from ecmpd.kernel.transport import release
from ecmpd.lab import netns
from ecmpd.lab.wait import wait_until
from ecmpd.model import (
    NH_ID_BASE,
    RTPROT_ECMPD,
    Family,
    GroupType,
    Nexthop,
    NexthopGroup,
    Route,
    RouteType,
)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

UPLINKS = ("u1", "u2", "u3")
TABLE = 1000
RTPROT_STATIC = 4
NH1, NH2, NH3 = NH_ID_BASE + 1, NH_ID_BASE + 2, NH_ID_BASE + 3
GROUP = NH_ID_BASE + 100
NETLINK_ROUTE = 0


def ip(ns: str, *args: str) -> str:
    """Run `ip -n NS ...` and return stdout; fail the test on error."""
    return subprocess.run(
        ["ip", "-n", ns, *args], check=True, capture_output=True, text=True
    ).stdout


def ip_json(ns: str, *args: str) -> Any:
    """`ip -n NS -j -d ...` parsed."""
    return json.loads(ip(ns, "-j", "-d", *args) or "[]")


def sysctl(ns: str, setting: str) -> None:
    """Set a sysctl inside the namespace only."""
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", setting], check=True)


def wait_for(done: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until done() holds: carrier changes reach the FIB via linkwatch, a bit later."""
    wait_until(done, timeout, "the kernel", 0.05)


def netlink_socket_in(ns: str) -> socket.socket:
    """An rtnetlink socket bound to namespace `ns`, opened from a short-lived thread.

    IPRoute(netns=...) forks the whole pytest process to open it, and the conftest's
    SIGTERM-to-KeyboardInterrupt handler lets that child live on as a second pytest
    run; setns() in a thread switches only that thread, so nothing forks.
    """
    return netns.socket_in(ns, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)


@dataclass
class Lab:
    """A namespace with uplinks u1..u3 and lan0, their peers in a second namespace."""

    ns: str
    peer: str
    ipr: Any
    index: dict[str, int]

    def name(self, ifindex: int | None) -> str | None:
        """Interface name of an ifindex."""
        return next((n for n, i in self.index.items() if i == ifindex), None)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Build the namespaces, yield an IPRoute inside, always delete both."""
    ns = f"ecmpdt-{os.getpid()}-{secrets.token_hex(3)}"
    peer = f"{ns}-p"
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "netns", "add", peer], check=True)
        ip(ns, "link", "set", "lo", "up")
        for i, dev in enumerate((*UPLINKS, "lan0"), start=1):
            net = 9 if dev == "lan0" else i
            ip(ns, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p", "netns", peer)
            ip(ns, "addr", "add", f"10.0.{net}.1/24", "dev", dev)
            ip(ns, "-6", "addr", "add", f"2001:db8:{net}::1/64", "dev", dev, "nodad")
            ip(ns, "link", "set", dev, "up")
            ip(peer, "addr", "add", f"10.0.{net}.2/24", "dev", f"{dev}p")
            ip(peer, "link", "set", f"{dev}p", "up")
        sock = netlink_socket_in(ns)
        try:
            ipr = IPRoute(fileno=sock.fileno())
        except BaseException:
            sock.close()
            raise
        sock.detach()  # ipr.close() closes the descriptor
        try:
            index = {link.get_attr("IFLA_IFNAME"): link["index"] for link in ipr.get_links()}
            yield Lab(ns, peer, ipr, index)
        finally:
            release(ipr)  # the raw socket beside it would keep the namespace alive
            ipr.close()
    finally:
        for name in (ns, peer):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def add_uplink_nexthops(lab: Lab) -> None:
    """NH1..NH3: gateway 10.0.i.2 on ui."""
    for i, (nhid, dev) in enumerate(zip((NH1, NH2, NH3), UPLINKS, strict=True), start=1):
        nh = Nexthop(nhid, Family.INET, dev, gateway=IPv4Address(f"10.0.{i}.2"))
        set_nexthop(lab.ipr, nh, lab.index[dev], replace=False)


def by_id(lab: Lab) -> dict[int, KernelNexthop]:
    """dump_nexthops keyed by id."""
    return {nh.id: nh for nh in dump_nexthops(lab.ipr)}


def json_by_id(lab: Lab) -> dict[int, Any]:
    """`ip -j -d nexthop show` keyed by id."""
    return {entry["id"]: entry for entry in ip_json(lab.ns, "nexthop", "show")}


def json_members(entry: Any) -> tuple[tuple[int, int], ...]:
    """Group members from ip's json (weight omitted when 1)."""
    return tuple(sorted((m["id"], m.get("weight", 1)) for m in entry["group"]))


def test_plain_nexthops_read_back(lab: Lab) -> None:
    """Gateway+dev, dev-only and onlink nexthops reach the kernel as sent."""
    gw = Nexthop(NH1, Family.INET, "u1", gateway=IPv4Address("10.0.1.2"))
    p2p = Nexthop(NH2, Family.INET, "u2")
    onlink = Nexthop(NH3, Family.INET, "u3", gateway=IPv4Address("192.0.2.1"), onlink=True)
    for nh in (gw, p2p, onlink):
        set_nexthop(lab.ipr, nh, lab.index[nh.ifname], replace=False)

    ours, theirs = by_id(lab), json_by_id(lab)
    assert set(ours) == set(theirs) == {NH1, NH2, NH3}
    for nh in (gw, p2p, onlink):
        got, js = ours[nh.id], theirs[nh.id]
        assert got == get_nexthop(lab.ipr, nh.id)
        assert (got.family, got.protocol, got.members) == (socket.AF_INET, RTPROT_ECMPD, None)
        assert got.ifindex == lab.index[nh.ifname] and js["dev"] == nh.ifname
        assert got.gateway == nh.gateway
        assert js.get("gateway") == (str(nh.gateway) if nh.gateway else None)
        assert got.onlink == nh.onlink == ("onlink" in js["flags"])
        assert js["protocol"] == str(RTPROT_ECMPD)
    # Replacing in place moves the gateway.
    moved = Nexthop(NH1, Family.INET, "u1", gateway=IPv4Address("10.0.1.3"))
    set_nexthop(lab.ipr, moved, lab.index["u1"], replace=True)
    assert json_by_id(lab)[NH1]["gateway"] == "10.0.1.3"
    with pytest.raises(NetlinkError) as exc:
        set_nexthop(lab.ipr, moved, lab.index["u1"], replace=False)
    assert exc.value.errno == errno.EEXIST
    # An off-subnet gateway without onlink is refused.
    bad = Nexthop(NH_ID_BASE + 9, Family.INET, "u1", gateway=IPv4Address("192.0.2.9"))
    with pytest.raises(NetlinkError) as exc:
        set_nexthop(lab.ipr, bad, lab.index["u1"], replace=False)
    assert exc.value.errno in (errno.EINVAL, errno.ENETUNREACH)
    assert get_nexthop(lab.ipr, NH_ID_BASE + 9) is None


def test_hash_threshold_weights(lab: Lab) -> None:
    """Weights 1, 2 and 256 (sent as weight-1) read back the same via netlink and ip."""
    add_uplink_nexthops(lab)
    members = ((NH1, 1), (NH2, 2), (NH3, 256))
    set_group(lab.ipr, NexthopGroup(GROUP, GroupType.HASH_THRESHOLD, members), replace=False)
    got = get_nexthop(lab.ipr, GROUP)
    assert got is not None
    assert (got.members, got.group_type, got.family) == (members, GroupType.HASH_THRESHOLD, 0)
    assert (got.buckets, got.idle_timer, got.unbalanced_timer) == (0, 0, 0)
    js = json_by_id(lab)[GROUP]
    assert json_members(js) == members and "type" not in js
    for weight in (0, 257):
        bad = NexthopGroup(GROUP + 1, GroupType.HASH_THRESHOLD, ((NH1, weight),))
        with pytest.raises(ValueError):
            set_group(lab.ipr, bad, replace=False)
    with pytest.raises(NetlinkError) as exc:  # a member that does not exist
        missing = NexthopGroup(GROUP + 1, GroupType.HASH_THRESHOLD, ((NH_ID_BASE + 77, 1),))
        set_group(lab.ipr, missing, replace=False)
    assert exc.value.errno == errno.EINVAL


def test_resilient_groups(lab: Lab) -> None:
    """Buckets and timers (nested NHA_RES_GROUP, clock_t) really reach the kernel."""
    add_uplink_nexthops(lab)
    members = ((NH1, 1), (NH2, 3))
    cases = {GROUP: (512, 60, 0), GROUP + 1: (64, 30, 15)}
    for gid, (buckets, idle, unbalanced) in cases.items():
        group = NexthopGroup(gid, GroupType.RESILIENT, members, buckets, idle, unbalanced)
        set_group(lab.ipr, group, replace=False)
    ours, theirs = by_id(lab), json_by_id(lab)
    for gid, (buckets, idle, unbalanced) in cases.items():
        got, js = ours[gid], theirs[gid]
        assert got.group_type is GroupType.RESILIENT and js["type"] == "resilient"
        assert got.members == json_members(js) == members
        assert (got.buckets, got.idle_timer, got.unbalanced_timer) == (buckets, idle, unbalanced)
        args = js["resilient_args"]
        assert (args["buckets"], args["idle_timer"], args["unbalanced_timer"]) == (
            buckets,
            idle,
            unbalanced,
        )
    # Timers and members change in place; bucket count and type do not (EINVAL).
    retimed = NexthopGroup(GROUP, GroupType.RESILIENT, ((NH1, 2), (NH3, 1)), 512, 90, 5)
    set_group(lab.ipr, retimed, replace=True)
    now = get_nexthop(lab.ipr, GROUP)
    assert now is not None
    assert (now.members, now.idle_timer, now.unbalanced_timer) == (retimed.members, 90, 5)
    rebucketed = NexthopGroup(GROUP, GroupType.RESILIENT, members, 256, 60, 0)
    retyped = NexthopGroup(GROUP, GroupType.HASH_THRESHOLD, members)
    for change in (rebucketed, retyped):
        with pytest.raises(NetlinkError) as exc:
            set_group(lab.ipr, change, replace=True)
        assert exc.value.errno == errno.EINVAL
    assert get_nexthop(lab.ipr, GROUP) == now
    # The other way round too: a hash-threshold group cannot become resilient.
    set_group(lab.ipr, NexthopGroup(GROUP + 2, GroupType.HASH_THRESHOLD, members), replace=False)
    with pytest.raises(NetlinkError) as exc:
        res = NexthopGroup(GROUP + 2, GroupType.RESILIENT, members, 128, 60, 0)
        set_group(lab.ipr, res, replace=True)
    assert exc.value.errno == errno.EINVAL


def test_replace_membership_and_delete(lab: Lab) -> None:
    """One replace drops a member; deletes remove groups and nexthops."""
    add_uplink_nexthops(lab)
    full = ((NH1, 1), (NH2, 1), (NH3, 1))
    set_group(lab.ipr, NexthopGroup(GROUP, GroupType.HASH_THRESHOLD, full), replace=False)
    fewer = ((NH1, 5), (NH3, 1))
    set_group(lab.ipr, NexthopGroup(GROUP, GroupType.HASH_THRESHOLD, fewer), replace=True)
    got = get_nexthop(lab.ipr, GROUP)
    assert got is not None and got.members == fewer
    assert json_members(json_by_id(lab)[GROUP]) == fewer

    delete_nexthop(lab.ipr, GROUP)
    assert get_nexthop(lab.ipr, GROUP) is None
    assert set(by_id(lab)) == set(json_by_id(lab)) == {NH1, NH2, NH3}
    # Deleting a member shrinks a group that uses it.
    set_group(lab.ipr, NexthopGroup(GROUP, GroupType.HASH_THRESHOLD, full), replace=False)
    delete_nexthop(lab.ipr, NH2)
    got = get_nexthop(lab.ipr, GROUP)
    assert got is not None and got.members == ((NH1, 1), (NH3, 1))
    with pytest.raises(NetlinkError) as exc:
        delete_nexthop(lab.ipr, NH2)
    assert exc.value.errno == errno.ENOENT


def json_routes(lab: Lab, table: int, family: str = "-4") -> dict[str, Any]:
    """`ip -j route show table N` keyed by dst."""
    return {r["dst"]: r for r in ip_json(lab.ns, family, "route", "show", "table", str(table))}


def test_routes_with_nhid_and_unreachable(lab: Lab) -> None:
    """set_route with RTA_NH_ID, gateway, prefsrc, metric, onlink, unreachable; read back."""
    add_uplink_nexthops(lab)
    set_group(
        lab.ipr, NexthopGroup(GROUP, GroupType.HASH_THRESHOLD, ((NH1, 1), (NH2, 1))), replace=False
    )
    routes = [
        Route(Family.INET, TABLE, ip_network("10.200.0.0/16"), nhid=GROUP),
        Route(Family.INET, TABLE, ip_network("0.0.0.0/0"), nhid=NH3, metric=10),
        Route(Family.INET, TABLE, ip_network("10.201.0.0/16"), type=RouteType.UNREACHABLE),
        Route(
            Family.INET,
            TABLE,
            ip_network("10.202.0.0/16"),
            ifname="u2",
            gateway=IPv4Address("192.0.2.7"),
            prefsrc=IPv4Address("10.0.2.1"),
            onlink=True,
        ),
        Route(Family.INET, TABLE, ip_network("10.203.0.0/16"), ifname="u1", scope=253),
        Route(Family.INET, 100, ip_network("10.204.0.0/16"), nhid=NH1),  # table < 256
    ]
    for route in routes:
        set_route(lab.ipr, "add", route, lab.index.get(route.ifname or ""))

    got = {(r.table, r.dst): r for r in dump_routes(lab.ipr, socket.AF_INET, TABLE)}
    assert {t for t, _ in got} == {TABLE}
    theirs = json_routes(lab, TABLE)
    for route in routes[:-1]:
        kr, js = (
            got[(TABLE, route.dst)],
            theirs["default" if route.dst.prefixlen == 0 else str(route.dst)],
        )
        assert (kr.family, kr.protocol, kr.nhid, kr.metric) == (
            socket.AF_INET,
            RTPROT_ECMPD,
            route.nhid,
            route.metric,
        )
        assert js.get("nhid") == route.nhid and js.get("metric", 0) == route.metric
        assert kr.type == route.type.value and js["type"] == route.type.name.lower()
        assert kr.scope == route.scope and kr.onlink == route.onlink == ("onlink" in js["flags"])
        assert kr.prefsrc == route.prefsrc
        assert js.get("prefsrc") == (str(route.prefsrc) if route.prefsrc else None)
        if route.nhid is None:
            assert kr.gateway == route.gateway and lab.name(kr.ifindex) == route.ifname
    # The kernel also reports a single-nexthop object's device and gateway (compat mode).
    default = got[(TABLE, ip_network("0.0.0.0/0"))]
    assert (lab.name(default.ifindex), default.gateway) == ("u3", IPv4Address("10.0.3.2"))
    small = dump_routes(lab.ipr, socket.AF_INET, 100)
    assert [(r.dst, r.nhid, r.table) for r in small] == [(routes[-1].dst, NH1, 100)]
    assert json_routes(lab, 100)["10.204.0.0/16"]["nhid"] == NH1
    everything = dump_routes(lab.ipr, socket.AF_INET)
    assert {r.table for r in everything} >= {100, TABLE, 254, 255}

    # Replace moves a route to another nexthop; del removes it.
    moved = Route(Family.INET, TABLE, ip_network("10.200.0.0/16"), nhid=NH2)
    set_route(lab.ipr, "replace", moved, None)
    assert json_routes(lab, TABLE)["10.200.0.0/16"]["nhid"] == NH2
    with pytest.raises(NetlinkError) as exc:
        set_route(lab.ipr, "add", moved, None)
    assert exc.value.errno == errno.EEXIST
    for route in (moved, *routes[1:]):
        set_route(lab.ipr, "del", route, lab.index.get(route.ifname or ""))
    assert dump_routes(lab.ipr, socket.AF_INET, TABLE) == []
    assert dump_routes(lab.ipr, socket.AF_INET, 100) == []


def ip_route_get(lab: Lab, dst: str, *args: str, family: str = "-4") -> tuple[Any, str | None]:
    """`ip -j route get DST ...` as (answer, None) or (None, strerror of the failure)."""
    proc = subprocess.run(
        ["ip", "-n", lab.ns, family, "-j", "route", "get", dst, *args],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return None, proc.stderr.strip().removeprefix("RTNETLINK answers: ")
    return json.loads(proc.stdout)[0], None


def l4_args(proto: int, sport: int, dport: int) -> list[str]:
    """ip route get arguments for the L4 keys."""
    return ["ipproto", str(proto), "sport", str(sport), "dport", str(dport)]


def three_way(lab: Lab, weights: tuple[int, int, int] = (1, 1, 1)) -> None:
    """10.200/16 in TABLE over a hash-threshold group of u1..u3, L4 hashing on."""
    add_uplink_nexthops(lab)
    members = tuple(zip((NH1, NH2, NH3), weights, strict=True))
    set_group(lab.ipr, NexthopGroup(GROUP, GroupType.HASH_THRESHOLD, members), replace=False)
    set_route(
        lab.ipr, "add", Route(Family.INET, TABLE, ip_network("10.200.0.0/16"), nhid=GROUP), None
    )
    ip(lab.ns, "rule", "add", "to", "10.200.0.0/16", "lookup", str(TABLE), "pref", "100")
    sysctl(lab.ns, "net.ipv4.fib_multipath_hash_policy=1")


def test_route_get_l4_matches_ip(lab: Lab) -> None:
    """With L4 hashing, route_get picks the same uplink as `ip route get` for every flow."""
    three_way(lab, (1, 2, 3))
    rng = random.Random(0xECD)
    seen = set()
    for _ in range(320):
        dst = IPv4Address(f"10.200.{rng.randrange(256)}.{rng.randrange(1, 255)}")
        proto, sport, dport = rng.choice((6, 17)), rng.randrange(1, 65536), rng.randrange(1, 65536)
        src = IPv4Address("10.0.9.1")
        got = route_get(lab.ipr, dst, src=src, ip_proto=proto, sport=sport, dport=dport)
        js, err = ip_route_get(lab, str(dst), "from", str(src), *l4_args(proto, sport, dport))
        assert err is None, err
        assert (lab.name(got.ifindex), str(got.gateway), got.table) == (
            js["dev"],
            js["gateway"],
            int(js["table"]),
        ), (dst, proto, sport, dport)
        seen.add(lab.name(got.ifindex))
    assert seen == set(UPLINKS)
    # Ports alone must move a flow: proof they reach the hash.
    dst = IPv4Address("10.200.1.1")
    devs = {
        route_get(lab.ipr, dst, ip_proto=6, sport=p, dport=443).ifindex for p in range(1000, 1040)
    }
    assert len(devs) > 1
    # The answer names the chosen nexthop's device and gateway, never the group id.
    assert route_get(lab.ipr, dst).nhid is None


def test_route_get_mark_and_oif(lab: Lab) -> None:
    """RTA_MARK steers through fwmark rules and RTA_OIF pins the device, as in `ip`."""
    three_way(lab)
    other = Route(Family.INET, TABLE + 1, ip_network("10.200.0.0/16"), nhid=NH2)
    set_route(lab.ipr, "add", other, None)
    ip(lab.ns, "rule", "add", "fwmark", "0x10", "lookup", str(TABLE + 1), "pref", "50")
    dst = IPv4Address("10.200.3.4")
    marked = route_get(lab.ipr, dst, mark=0x10)
    js, err = ip_route_get(lab, str(dst), "mark", "0x10")
    assert err is None and marked.table == int(js["table"]) == TABLE + 1
    assert lab.name(marked.ifindex) == js["dev"] == "u2"
    pinned = route_get(lab.ipr, dst, oif=lab.index["u3"], uid=1000)
    js, err = ip_route_get(lab, str(dst), "oif", "u3", "uid", "1000")
    assert err is None and lab.name(pinned.ifindex) == js["dev"] == "u3"
    assert str(pinned.gateway) == js["gateway"] == "10.0.3.2"


def test_route_get_iif_matches_ip(lab: Lab) -> None:
    """Forwarded-traffic lookups (iif) agree with `ip route get ... iif`, errors included."""
    three_way(lab)
    sysctl(lab.ns, "net.ipv4.ip_forward=1")
    rng = random.Random(7)
    src = IPv4Address("10.0.9.2")
    for _ in range(60):
        dst = IPv4Address(f"10.200.{rng.randrange(256)}.{rng.randrange(1, 255)}")
        sport, dport = rng.randrange(1, 65536), rng.randrange(1, 65536)
        got = route_get(
            lab.ipr, dst, src=src, iif=lab.index["lan0"], ip_proto=6, sport=sport, dport=dport
        )
        js, err = ip_route_get(
            lab, str(dst), "from", str(src), "iif", "lan0", *l4_args(6, sport, dport)
        )
        assert err is None, err
        assert (lab.name(got.ifindex), str(got.gateway)) == (js["dev"], js["gateway"])
    # Failures come back as RouteLookupError with the same errno `ip` reports.
    ip(lab.ns, "route", "add", "unreachable", "10.201.0.0/16")
    ip(lab.ns, "route", "add", "prohibit", "10.202.0.0/16")
    assert_fails(lab, "10.201.0.1", None, errno.EHOSTUNREACH)
    assert_fails(lab, "10.202.0.1", None, errno.EACCES)
    assert_fails(lab, "10.202.0.1", src, errno.EACCES)
    assert_fails(lab, "10.205.0.1", src, errno.ENETUNREACH)
    assert_fails(lab, "192.0.2.1", None, errno.ENETUNREACH)
    # rp_filter: 10.0.1.50's reverse path is u1, so arriving on lan0 it is refused.
    sysctl(lab.ns, "net.ipv4.conf.all.rp_filter=1")
    sysctl(lab.ns, "net.ipv4.conf.lan0.rp_filter=1")
    assert_fails(lab, "10.200.0.1", IPv4Address("10.0.1.50"), errno.EINVAL)


def assert_fails(lab: Lab, dst: str, src_on_lan0: IPv4Address | None, expected: int) -> None:
    """route_get raises RouteLookupError(expected), and `ip route get` fails the same way."""
    args = ["from", str(src_on_lan0), "iif", "lan0"] if src_on_lan0 else []
    iif = lab.index["lan0"] if src_on_lan0 else None
    with pytest.raises(RouteLookupError) as exc:
        route_get(lab.ipr, IPv4Address(dst), src=src_on_lan0, iif=iif)
    assert exc.value.errno == expected, (dst, args)
    _, err = ip_route_get(lab, dst, *args)
    assert err == os.strerror(expected), (dst, args)


def test_foreign_protocol_reported(lab: Lab) -> None:
    """A nexthop someone else added with `proto static` reports protocol 4."""
    ip(lab.ns, "nexthop", "add", "id", "77", "via", "10.0.1.2", "dev", "u1", "proto", "static")
    got = get_nexthop(lab.ipr, 77)
    assert got is not None and got.protocol == RTPROT_STATIC
    assert [nh.protocol for nh in dump_nexthops(lab.ipr)] == [RTPROT_STATIC]


def test_carrier_loss_deletes_nexthops(lab: Lab) -> None:
    """Losing carrier deletes the device's nexthops, shrinks groups, drops their routes."""
    add_uplink_nexthops(lab)
    pair = NexthopGroup(GROUP, GroupType.HASH_THRESHOLD, ((NH1, 1), (NH2, 1)))
    solo = NexthopGroup(GROUP + 1, GroupType.RESILIENT, ((NH1, 1),), 32, 60, 0)
    for group in (pair, solo):
        set_group(lab.ipr, group, replace=False)
    for dst, nhid in (
        ("10.200.0.0/16", GROUP),
        ("10.201.0.0/16", NH1),
        ("10.202.0.0/16", GROUP + 1),
    ):
        set_route(lab.ipr, "add", Route(Family.INET, TABLE, ip_network(dst), nhid=nhid), None)

    ip(lab.peer, "link", "set", "u1p", "down")
    wait_for(lambda: NH1 not in by_id(lab))
    left = by_id(lab)
    assert set(left) == set(json_by_id(lab)) == {NH2, NH3, GROUP}
    assert left[GROUP].members == ((NH2, 1),)
    assert [(str(r.dst), r.nhid) for r in dump_routes(lab.ipr, socket.AF_INET, TABLE)] == [
        ("10.200.0.0/16", GROUP)
    ]
    # Carrier back: nothing comes back by itself, and it can be re-created.
    ip(lab.peer, "link", "set", "u1p", "up")
    wait_for(lambda: "LOWER_UP" in ip(lab.ns, "link", "show", "u1"))
    assert get_nexthop(lab.ipr, NH1) is None
    nh1 = Nexthop(NH1, Family.INET, "u1", gateway=IPv4Address("10.0.1.2"))
    set_nexthop(lab.ipr, nh1, lab.index["u1"], replace=False)
    # No carrier: the kernel refuses to create a nexthop on the device at all.
    ip(lab.peer, "link", "set", "u2p", "down")
    wait_for(lambda: NH2 not in by_id(lab))
    # The group lost its last member: it is deleted, and so is the route using it.
    assert set(by_id(lab)) == {NH1, NH3}
    assert dump_routes(lab.ipr, socket.AF_INET, TABLE) == []
    nh2 = Nexthop(NH2, Family.INET, "u2", gateway=IPv4Address("10.0.2.2"))
    with pytest.raises(NetlinkError) as exc:
        set_nexthop(lab.ipr, nh2, lab.index["u2"], replace=False)
    assert exc.value.errno == errno.ENETDOWN
    # Admin-down of the device itself deletes its nexthops too.
    ip(lab.ns, "link", "set", "u3", "down")
    wait_for(lambda: set(by_id(lab)) == {NH1})


def test_ipv6_nexthops_routes_and_lookup(lab: Lab) -> None:
    """IPv6 nexthops, a group, a route with nhid and L4 lookups agree with ip."""
    nhs = [
        Nexthop(NH_ID_BASE + 60 + i, Family.INET6, dev, gateway=IPv6Address(f"2001:db8:{i}::2"))
        for i, dev in enumerate(UPLINKS, start=1)
    ]
    for nh in nhs:
        set_nexthop(lab.ipr, nh, lab.index[nh.ifname], replace=False)
    members = tuple((nh.id, 1) for nh in nhs)
    set_group(lab.ipr, NexthopGroup(GROUP, GroupType.HASH_THRESHOLD, members), replace=False)
    ours, theirs = by_id(lab), json_by_id(lab)
    for nh in nhs:
        assert ours[nh.id].family == socket.AF_INET6 and ours[nh.id].gateway == nh.gateway
        assert theirs[nh.id]["gateway"] == str(nh.gateway)
    route = Route(Family.INET6, TABLE, ip_network("2001:db8:200::/48"), nhid=GROUP, metric=1024)
    set_route(lab.ipr, "add", route, None)
    (kr,) = dump_routes(lab.ipr, socket.AF_INET6, TABLE)
    assert (kr.dst, kr.nhid, kr.metric, kr.family) == (route.dst, GROUP, 1024, socket.AF_INET6)
    assert json_routes(lab, TABLE, "-6")["2001:db8:200::/48"]["nhid"] == GROUP
    ip(lab.ns, "-6", "rule", "add", "to", "2001:db8:200::/48", "lookup", str(TABLE), "pref", "100")
    sysctl(lab.ns, "net.ipv6.fib_multipath_hash_policy=1")
    rng = random.Random(6)
    seen = set()
    for _ in range(60):
        dst = IPv6Address(f"2001:db8:200::{rng.randrange(1, 65536):x}")
        sport, dport = rng.randrange(1, 65536), rng.randrange(1, 65536)
        got = route_get(lab.ipr, dst, ip_proto=17, sport=sport, dport=dport)
        js, err = ip_route_get(lab, str(dst), *l4_args(17, sport, dport), family="-6")
        assert err is None, err
        assert (lab.name(got.ifindex), str(got.gateway)) == (js["dev"], js["gateway"])
        seen.add(got.ifindex)
    assert len(seen) > 1
    set_route(lab.ipr, "del", route, None)
    assert dump_routes(lab.ipr, socket.AF_INET6, TABLE) == []
    # IPv6 stores metric 0 as 1024 (IP6_RT_PRIO_USER); deleting with 0 still matches.
    zero = Route(Family.INET6, TABLE, ip_network("2001:db8:201::/48"), nhid=GROUP)
    set_route(lab.ipr, "add", zero, None)
    assert [r.metric for r in dump_routes(lab.ipr, socket.AF_INET6, TABLE)] == [1024]
    set_route(lab.ipr, "del", zero, None)
    assert dump_routes(lab.ipr, socket.AF_INET6, TABLE) == []
