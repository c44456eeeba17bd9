"""The raw-socket kernel path: parsers agree with pyroute2's, and every socket lands in
the namespace its IPRoute uses, whatever thread asks (the packing: unit/test_kernel_messages)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST

from ecmpd.kernel import nexthop as nl
from ecmpd.kernel import record as record_module
from ecmpd.kernel.apply import KernelWriter, reconcile
from ecmpd.kernel.netlink import open_iproute
from ecmpd.kernel.nexthop import NhMsg
from ecmpd.kernel.observe import observe, observe_links
from ecmpd.kernel.record import Record
from ecmpd.kernel.routemsg import (
    DEFAULT_ROUTE_PROTOCOLS,
    RtMsg,
    scan_routes,
    to_addr,
)
from ecmpd.kernel.rules import dump_rules
from ecmpd.kernel.transport import NetlinkError, NetlinkSocket, netlink_for, release
from ecmpd.lab import netns
from ecmpd.model import (
    NH_ID_BASE,
    RTPROT_ECMPD,
    DesiredState,
    Family,
    GroupType,
    Nexthop,
    NexthopGroup,
    PortRange,
    Route,
    Rule,
    RuleAction,
    Sysctl,
)
from ecmpd.plan import Op, OpKind
from tests.integration.fixtures.faultywriter import FaultyWriter

SIOCGSKNS = 0x894C
NH1, NH2, NH6, GROUP, GROUP6 = (NH_ID_BASE + n for n in (1, 2, 6, 100, 106))


# --- reference decodings: pyroute2's, as the code did before ------------------------


# --- a namespace with something of everything -----------------------------------------


@dataclass
class Space:
    """A namespace with veths u1, u2 (peers in a second namespace) and an IPRoute inside."""

    ns: str
    peer: str
    ipr: Any

    def ip(self, *args: str) -> str:
        """`ip -n NS ...`, failing the test on error."""
        done = subprocess.run(["ip", "-n", self.ns, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def space(lab_prefix: str) -> Iterator[Space]:
    ns, peer = f"{lab_prefix}k", f"{lab_prefix}kp"
    netns.create_netns(ns)
    netns.create_netns(peer)
    ipr = netns.iproute(ns)
    try:
        s = Space(ns, peer, ipr)
        s.ip("link", "set", "lo", "up")
        for i in (1, 2):
            s.ip("link", "add", f"u{i}", "type", "veth", "peer", "name", f"p{i}", "netns", peer)
            s.ip("addr", "add", f"10.0.{i}.1/24", "dev", f"u{i}")
            s.ip("-6", "addr", "add", f"2001:db8:{i}::1/64", "dev", f"u{i}", "nodad")
            s.ip("link", "set", f"u{i}", "up")
            subprocess.run(["ip", "-n", peer, "link", "set", f"p{i}", "up"], check=True)
        yield s
    finally:
        release(ipr)
        ipr.close()
        netns.remove_netns(peer)
        netns.remove_netns(ns)


def _populate(s: Space) -> None:
    """Foreign and owned objects of every kind the parsers meet."""
    for command in (
        f"nexthop add id {NH1} via 10.0.1.2 dev u1 proto 236",
        f"nexthop add id {NH2} via 10.0.2.2 dev u2 proto 236",
        "nexthop add id 77 via 10.0.2.2 dev u2",
        "nexthop add id 78 blackhole",
        f"nexthop add id {GROUP} group {NH1}/{NH2},3 type resilient buckets 64 idle_timer 60"
        " proto 236",
        f"nexthop add id {GROUP + 1} group {NH1},256/{NH2} proto 236",
        f"nexthop add id {NH6} via 2001:db8:1::2 dev u1 proto 236",
        f"nexthop add id {GROUP6} group {NH6} proto 236",
        f"route add default nhid {GROUP} table 200 proto 236",
        "route add unreachable 10.99.0.0/16 table 70000 proto 236",
        "route add 10.98.0.0/16 via 10.0.1.2 dev u1 table 300 src 10.0.1.1 metric 7 proto 236",
        "route add 192.0.2.0/24 via 10.0.2.2 table 70001",
        "route add default via 10.0.1.2 metric 100",
        "route add default via 10.0.2.3 metric 200",
        "route add default via 10.0.2.2 metric 50",
        # A routing daemon's default: not what `gateway: dhcp` follows, never asked for.
        "route add default via 10.0.1.2 metric 300 proto bgp",
        "-6 route add default via 2001:db8:1::2 dev u1 metric 300 proto bgp",
        "-6 route add default via 2001:db8:1::3 dev u1 metric 400 proto dhcp",
        "route add 198.51.100.0/24 nexthop via 10.0.1.2 nexthop via 10.0.2.2",
        "-6 route add default via 2001:db8:2::2 dev u2",
        f"-6 route add 2001:db8:99::/48 nhid {GROUP6} table 200 proto 236",
        "rule add pref 10000 from 10.0.1.1 lookup 300 proto 236",
        "rule add pref 10001 iif u2 fwmark 0x10/0xff ipproto tcp sport 1000-2000 dport 443"
        " lookup 70000 proto 236",
        "rule add pref 10002 to 203.0.113.0/28 unreachable proto 236",
        "rule add pref 10003 lookup main suppress_prefixlength 0 proto 236",
        "rule add pref 500 from 10.9.9.9 lookup 300",
        "rule add pref 501 goto 10000",
        "-6 rule add pref 10004 from 2001:db8::/48 lookup 200 proto 236",
    ):
        s.ip(*command.split())


def _ref_dump(ipr: Any, cls: Any, msg_type: int, reply_type: int, family: int) -> list[Any]:
    """A dump through pyroute2, re-decoded with our pyroute2 classes (the old path)."""
    ipr.status.setdefault("nlm_generator", False)
    req = cls()
    req["family"] = family
    out = []
    for msg in ipr.nlm_request(req, msg_type=msg_type, msg_flags=NLM_F_REQUEST | NLM_F_DUMP):
        if msg["header"]["type"] == reply_type:
            mine = cls(msg.data, offset=msg.offset)
            mine.decode()
            out.append(mine)
    return out


def _addr(raw: Any) -> Any:
    return to_addr(raw)


def test_parsers_agree_with_pyroute2_decoding(space: Space) -> None:
    """Every route, nexthop and rule dumped reads the same as pyroute2 decodes it."""
    _populate(space)
    ipr = space.ipr
    for family in (socket.AF_INET, socket.AF_INET6):
        ours = nl.dump_routes(ipr, family)
        theirs = [m for m in _ref_dump(ipr, RtMsg, 26, 24, family) if not m["flags"] & 0x200]
        assert len(ours) == len(theirs) > 5
        for kr, m in zip(ours, theirs, strict=True):
            table = m.get_attr("RTA_TABLE")
            assert (kr.family, kr.table, kr.type, kr.protocol, kr.scope) == (
                m["family"],
                m["table"] if table is None else table,
                m["type"],
                m["proto"],
                m["scope"],
            )
            assert kr.dst.prefixlen == m["dst_len"]
            assert (kr.ifindex, kr.nhid) == (m.get_attr("RTA_OIF"), m.get_attr("RTA_NH_ID"))
            assert kr.gateway == _addr(m.get_attr("RTA_GATEWAY"))
            assert kr.prefsrc == _addr(m.get_attr("RTA_PREFSRC"))
            assert kr.metric == (m.get_attr("RTA_PRIORITY") or 0)
        # Kernel-filtered dumps serve observe: owned routes in full, the main defaults a
        # DHCP client or RA installed, and which of the asked tables hold foreign routes.
        every_table = {r.table for r in ours}
        scan = scan_routes(ipr, family, sorted(every_table))
        assert scan.owned == [r for r in ours if r.protocol == RTPROT_ECMPD]
        defaults = [r for r in ours if r.table == 254 and not r.dst.prefixlen]
        assert {r.protocol for r in defaults} - set(DEFAULT_ROUTE_PROTOCOLS)  # one left out
        assert sorted(scan.main_defaults, key=repr) == sorted(
            (r for r in defaults if r.protocol in DEFAULT_ROUTE_PROTOCOLS), key=repr
        )
        assert scan.main_defaults
        assert scan.tables == {r.table for r in ours if r.protocol != RTPROT_ECMPD}
        assert scan_routes(ipr, family).tables == set()  # none asked, none looked into
    assert 70001 in scan_routes(ipr, socket.AF_INET, [70001]).tables

    ours_nh = nl.dump_nexthops(ipr)
    theirs_nh = _ref_dump(ipr, NhMsg, 106, 104, 0)
    assert [n.id for n in ours_nh] == [m.get_attr("NHA_ID") for m in theirs_nh]
    by_id = {n.id: n for n in ours_nh}
    assert by_id[78].blackhole and by_id[77].protocol != RTPROT_ECMPD
    assert by_id[GROUP].members == ((NH1, 1), (NH2, 3))
    assert (by_id[GROUP].group_type, by_id[GROUP].buckets) == (GroupType.RESILIENT, 64)
    assert by_id[GROUP].idle_timer == 60
    assert by_id[GROUP + 1].members == ((NH1, 256), (NH2, 1))
    assert by_id[GROUP + 1].group_type is GroupType.HASH_THRESHOLD
    for kn in ours_nh:
        assert kn == nl.get_nexthop(ipr, kn.id)

    rules = {(r.family, r.priority): (r, proto) for r, proto in dump_rules(ipr)}
    js = json.loads(space.ip("-j", "rule", "show")) + json.loads(space.ip("-6", "-j", "rule"))
    assert len(rules) == len(js)
    fancy, proto = rules[(Family.INET, 10001)]
    assert proto == RTPROT_ECMPD
    assert fancy == Rule(
        Family.INET,
        10001,
        RuleAction.LOOKUP,
        table=70000,
        iif="u2",
        fwmark=0x10,
        fwmask=0xFF,
        ip_proto=6,
        sport=PortRange(1000, 2000),
        dport=PortRange(443, 443),
    )
    assert rules[(Family.INET, 10000)][0].src == ip_network("10.0.1.1/32")
    assert rules[(Family.INET, 10002)][0].action is RuleAction.UNREACHABLE
    assert rules[(Family.INET, 10003)][0].suppress_prefixlength == 0
    assert rules[(Family.INET6, 10004)][0].src == ip_network("2001:db8::/48")
    assert rules[(Family.INET, 501)][1] == 0  # goto: never read as ecmpd's


def test_observe_reads_owned_objects_only_and_the_facts(space: Space) -> None:
    """Owned objects in full, foreign ones as conflicts only, gateways by lowest metric."""
    _populate(space)
    observed, facts = observe(space.ipr, {}, [200, 300, 70000, 70001, 70002])
    assert {r.priority for r in observed.rules} == {10000, 10001, 10002, 10003, 10004}
    assert {g.id for g in observed.groups} == {GROUP, GROUP + 1, GROUP6}
    assert {n.id for n in observed.nexthops} == {NH1, NH2, NH6}
    assert {(r.table, str(r.dst)) for r in observed.routes} == {
        (200, "0.0.0.0/0"),
        (70000, "10.99.0.0/16"),
        (300, "10.98.0.0/16"),
        (200, "2001:db8:99::/48"),
    }
    assert facts.foreign_tables == {70001}  # 300 holds only ecmpd's route; 70002 is empty
    assert observe(space.ipr, {})[1].foreign_tables == set()  # only checked when asked
    assert facts.foreign_nexthop_ids == {77, 78}
    assert (Family.INET, 500) in facts.foreign_rule_priorities
    u1, u2 = facts.interfaces["u1"], facts.interfaces["u2"]
    assert u2.dhcp_gateway == IPv4Address("10.0.2.2")  # metric 50 beats 200 (10.0.2.3)
    assert u1.dhcp_gateway == IPv4Address("10.0.1.2")
    assert u2.dhcp_gateway6 == IPv6Address("2001:db8:2::2")
    # u1's bgp default has the lower metric but is no lease: the dhcp one is followed.
    assert u1.dhcp_gateway6 == IPv6Address("2001:db8:1::3")
    assert {"10.0.1.1/24", "2001:db8:1::1/64"} <= {str(a) for a in u1.addresses}
    assert u1.up and u1.carrier and not u1.pointopoint


def test_errors_name_their_request_and_the_socket_carries_on(space: Space) -> None:
    """A refusal raises NetlinkError with errno and the kernel's message; the next works."""
    sock = netlink_for(space.ipr)
    bad = Nexthop(NH_ID_BASE + 9, Family.INET, "u1", gateway=IPv4Address("192.0.2.9"))
    with pytest.raises(NetlinkError) as exc:
        sock.request(*nl.nexthop_message(bad, 2, replace=False))
    assert exc.value.errno in (errno.EINVAL, errno.ENETUNREACH)
    assert exc.value.strerror  # the kernel's extended-ack message, or strerror
    with pytest.raises(NetlinkError) as exc:
        nl.delete_nexthop(space.ipr, NH_ID_BASE + 9)
    assert exc.value.errno == errno.ENOENT
    index = json.loads(space.ip("-j", "link", "show", "u1"))[0]["ifindex"]
    good = Nexthop(NH1, Family.INET, "u1", gateway=IPv4Address("10.0.1.2"))
    assert sock.request(*nl.nexthop_message(good, index, replace=False)) == []
    assert nl.get_nexthop(space.ipr, NH1) is not None


def _netns_of(fd: int) -> int:
    ns_fd = fcntl.ioctl(fd, SIOCGSKNS)
    try:
        return os.fstat(ns_fd).st_ino
    finally:
        os.close(ns_fd)


def test_raw_sockets_follow_the_iproutes_namespace_from_any_thread(
    space: Space, tmp_path: Path
) -> None:
    """Built on a given socket or per thread (pyroute2's default): never the caller's own."""
    target = os.stat(netns.netns_path(space.ns)).st_ino
    assert os.stat("/proc/thread-self/ns/net").st_ino != target
    # An IPRoute on a socket made inside: from this (outside) thread, still inside.
    assert _netns_of(netlink_for(space.ipr).fileno()) == target
    writer = KernelWriter(space.ipr, Record(tmp_path / "a"))
    assert _netns_of(writer.nl.fileno()) == target
    writer.close()

    # open_iproute() makes each thread's socket on first use, where that thread is: the
    # writer must follow the thread that uses it.
    def use_and_close() -> tuple[int, set[str]]:
        # pyroute2 closes only the calling thread's event loop: all of it in one thread.
        lazy = open_iproute()
        lazy_writer = KernelWriter(lazy, Record(tmp_path / "b"))
        try:
            _, facts = lazy_writer.observe()
            return _netns_of(lazy_writer.nl.fileno()), set(facts.interfaces)
        finally:
            lazy_writer.close()
            release(lazy)
            lazy.close()

    ns_ino, names = netns.call_in(space.ns, use_and_close)
    assert ns_ino == target and {"u1", "u2"} <= names


def test_reconcile_batches_the_sysctl_record_and_keeps_write_ahead(
    space: Space, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Originals saved once before the first write; a restore saves once at the end."""
    names = [f"net.ipv4.conf.u{i}.rp_filter" for i in (1, 2)] + [
        "net.ipv4.fib_multipath_hash_policy"
    ]
    before = {n: netns.read_sysctl(space.ns, n) for n in names}
    want = {n: "1" if v == "2" else "2" for n, v in before.items()}
    desired = DesiredState(sysctls=frozenset(Sysctl(n, v) for n, v in want.items()))
    run = tmp_path / "run"
    saves: list[dict[str, str]] = []
    real_save = record_module.Record.save

    def counting_save(self: Record) -> None:
        real_save(self)
        saves.append(json.loads(self.path.read_text())["sysctls"])

    written: list[str] = []
    real_write = KernelWriter._sysctl

    def checked(self: KernelWriter, kind: OpKind, s: Sysctl) -> None:
        if kind is not OpKind.DELETE:
            # Write-ahead: the original is on disk before the value changes.
            assert s.name in json.loads((run / "state.json").read_text())["sysctls"]
        written.append(s.name)
        real_write(self, kind, s)

    monkeypatch.setattr(record_module.Record, "save", counting_save)
    monkeypatch.setattr(KernelWriter, "_sysctl", checked)
    # Sysctls follow the thread: the writer runs in one inside, on a raw socket (usable
    # from any thread, unlike an IPRoute built on a given socket).
    writer = KernelWriter(netlink_for(space.ipr), Record(run))

    def apply_and_down() -> None:
        assert len(reconcile(writer, desired).ops) == 3
        assert len(saves) == 1 and saves[0] == before
        assert {n: netns.read_sysctl(space.ns, n) for n in names} == want
        assert reconcile(writer, desired).ops == []
        assert len(reconcile(writer, DesiredState()).ops) == 3
        assert len(saves) == 2 and saves[1] == {}
        assert {n: netns.read_sysctl(space.ns, n) for n in names} == before

    try:
        netns.call_in(space.ns, apply_and_down)
    finally:
        writer.close()
    assert sorted(written) == sorted(names * 2)


def test_execute_deletes_what_is_gone_and_reconcile_reuses_an_observation(
    space: Space, tmp_path: Path
) -> None:
    """DELETE of a missing object is done; `before` skips observing; faults still roll back."""
    writer = FaultyWriter(space.ipr, Record(tmp_path / "run"), fail_after=10**6)
    try:
        writer.execute(Op(OpKind.DELETE, Nexthop(NH1, Family.INET, "u1")))
        observed, _ = writer.observe()
        group = NexthopGroup(GROUP, GroupType.HASH_THRESHOLD, ((NH1, 1), (NH2, 2)))
        desired = DesiredState(
            nexthops=frozenset(
                Nexthop(n, Family.INET, f"u{i}", gateway=IPv4Address(f"10.0.{i}.2"))
                for i, n in ((1, NH1), (2, NH2))
            ),
            groups=frozenset({group}),
            routes=frozenset({Route(Family.INET, 200, ip_network("0.0.0.0/0"), nhid=GROUP)}),
        )
        assert len(reconcile(writer, desired, before=observed).ops) == 4
        assert writer.observe()[0] == desired
        writer.fail_after = 1
        changed = DesiredState(nexthops=desired.nexthops)
        with pytest.raises(Exception, match="rolled back"):
            reconcile(writer, changed)
        assert writer.observe()[0] == desired
        assert reconcile(writer, DesiredState()).ops
        assert writer.observe()[0] == DesiredState()
    finally:
        writer.close()


def test_one_socket_per_namespace_is_shared_by_threads(space: Space) -> None:
    """Requests from several threads on one socket each get their own answer."""
    sock = netlink_for(space.ipr)
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(50):
                assert nl.get_nexthop(sock, NH_ID_BASE + 5) is None
                assert {"u1", "u2"} <= {n for n in observe(sock, {})[1].interfaces}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert isinstance(sock, NetlinkSocket)


def test_a_carrier_events_light_reread_sees_what_a_full_one_does(space: Space) -> None:
    """observe_links (links + nexthops) after carrier loss agrees with a full observe."""
    _populate(space)
    before, facts = observe(space.ipr, {})
    subprocess.run(["ip", "-n", space.peer, "link", "set", "p1", "down"], check=True)
    # The flush follows the carrier change (linkwatch): the daemon hears RTM_NEWLINK after it.
    wait = time.monotonic() + 5
    while NH1 in {n.id for n in observe(space.ipr, {})[0].nexthops}:
        assert time.monotonic() < wait, "the kernel never flushed the nexthop on u1"
        time.sleep(0.01)
    full, full_facts = observe(space.ipr, {})
    light, light_facts = observe_links(space.ipr, before, facts)
    assert not light_facts.interfaces["u1"].carrier
    assert NH1 not in {n.id for n in light.nexthops}
    assert (light.nexthops, light.groups) == (full.nexthops, full.groups)
    assert light_facts == full_facts
    # Not re-read, but the routes through a group that lost its last member (GROUP6: NH6
    # alone, on u1) went with it, as in the kernel; the rest is kept.
    assert {r.nhid for r in before.routes} >= {GROUP, GROUP6}
    assert GROUP6 not in {r.nhid for r in light.routes}
    assert light.routes == full.routes
