"""Targeted conntrack cleanup in a NAT lab: one uplink's flows go, the other's stay and work."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from ecmpd.health.packets import build_echo
from ecmpd.kernel import conntrack as ct
from ecmpd.kernel import ctmessages as ctm
from ecmpd.kernel import nftables as nft
from ecmpd.lab import netns
from ecmpd.lab.faults import load_nft
from ecmpd.lab.layout import Lab
from ecmpd.lab.topology import add_lan_clients
from ecmpd.lab.wait import wait_until
from ecmpd.model import Family, NftTable
from tests.integration.fixtures.connections import tcp_server
from tests.integration.fixtures.labs import LabFactory, nat_lab

HOLD_PORT = 7100
UDP_PORT = 9999
SIDE_TABLE = 102
CONNECTIONS = 4


def two_uplink_nat_lab(lab_factory: LabFactory) -> tuple[Lab, IPv4Address, IPv4Address]:
    """A NAT lab whose LAN client A leaves by isp-a and client B by isp-b."""
    lab = nat_lab(lab_factory)
    client_a, client_b = add_lan_clients(lab, 2)
    with netns.iproute(lab.router) as ipr:
        ipr.route("add", dst="0.0.0.0/0", gateway=str(lab.isps[1].gateway), table=SIDE_TABLE)
        ipr.rule("add", src=str(client_b), src_len=32, table=SIDE_TABLE, priority=1000)
    plan = NftTable(masquerade=tuple(isp.uplink_if for isp in lab.isps))
    netns.call_in(lab.router, lambda: nft.apply_table(plan))
    return lab, client_a, client_b


def hold_server(lab: Lab, address: IPv4Address) -> contextlib.AbstractContextManager[None]:
    """A TCP server in the internet namespace that echoes lines and keeps connections open."""

    def echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(4096):
                conn.sendall(data)

    return tcp_server(lab.internet, address, HOLD_PORT, echo)


def connect(ns: str, source: IPv4Address, server: IPv4Address) -> socket.socket:
    """A connected TCP socket from source (in namespace ns) to the hold server."""
    sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(3)
    sock.bind((str(source), 0))
    sock.connect((str(server), HOLD_PORT))
    return sock


def round_trip(sock: socket.socket) -> bool:
    """Tells whether the connection still carries data both ways."""
    try:
        sock.sendall(b"ping\n")
        return sock.recv(16) == b"ping\n"
    except OSError:
        return False


def ping(lab: Lab, source: IPv4Address, server: IPv4Address) -> None:
    """Sends one ICMP echo request from a LAN address (makes an ICMP conntrack entry)."""
    assert lab.lan is not None
    with netns.socket_in(lab.lan, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.bind((str(source), 0))
        sock.sendto(build_echo(Family.INET, 0x4242, 1), (str(server), 0))


def udp_flows(lab: Lab, source: IPv4Address, server: IPv4Address, n: int, base: int) -> None:
    """Starts n UDP flows (one datagram each, distinct source ports) from a LAN address."""
    assert lab.lan is not None

    def send() -> None:
        for k in range(n):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((str(source), base + k))
                sock.sendto(b"x", (str(server), UDP_PORT))
            if k % 50 == 49:
                time.sleep(0.002)  # stay far below the veth backlog: no datagram lost

    netns.call_in(lab.lan, send)


def procfs_reply_dsts(lab: Lab) -> list[str]:
    """Each conntrack entry's reply destination, read independently through procfs."""
    text = netns.call_in(lab.router, Path("/proc/thread-self/net/nf_conntrack").read_text)
    # "... src=A dst=B sport=.. dport=.. src=C dst=D ..." : the second dst= is the reply's.
    return [
        [field[4:] for field in line.split() if field.startswith("dst=")][1]
        for line in text.splitlines()
        if line.startswith("ipv4")
    ]


def flows(lab: Lab, address: IPv4Address) -> list[ctm.Flow]:
    """The router's entries whose reply goes to address."""
    return netns.call_in(lab.router, lambda: ct.uplink_flows(address))


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Polls until predicate() is true."""
    wait_until(predicate, timeout, "the conntrack condition", 0.02)


def test_delete_uplink_flows_removes_only_that_uplinks_entries(
    lab_factory: LabFactory,
) -> None:
    lab, client_a, client_b = two_uplink_nat_lab(lab_factory)
    assert lab.lan is not None
    nat_a, nat_b = (isp.address.ip for isp in lab.isps)
    server = lab.servers[1]
    with hold_server(lab, server), contextlib.ExitStack() as stack:
        via_a = [
            stack.enter_context(connect(lab.lan, client_a, server)) for _ in range(CONNECTIONS)
        ]
        via_b = [
            stack.enter_context(connect(lab.lan, client_b, server)) for _ in range(CONNECTIONS)
        ]
        assert all(round_trip(s) for s in via_a + via_b)
        ping(lab, client_a, server)
        wait_for(lambda: len(flows(lab, nat_a)) == CONNECTIONS + 1)

        before_a, before_b = flows(lab, nat_a), flows(lab, nat_b)
        assert {(f.proto, f.orig_src) for f in before_a} == {
            (socket.IPPROTO_TCP, client_a),
            (socket.IPPROTO_ICMP, client_a),
        }
        assert {(f.proto, f.orig_src, f.dport) for f in before_b} == {
            (socket.IPPROTO_TCP, client_b, HOLD_PORT)
        }
        assert len(before_b) == CONNECTIONS
        assert procfs_reply_dsts(lab).count(str(nat_a)) == CONNECTIONS + 1

        deleted = netns.call_in(lab.router, lambda: ct.delete_uplink_flows(nat_a))

        assert deleted == CONNECTIONS + 1
        assert str(nat_a) not in procfs_reply_dsts(lab)
        assert flows(lab, nat_a) == []
        assert {f.ct_id for f in flows(lab, nat_b)} == {f.ct_id for f in before_b}
        assert all(round_trip(s) for s in via_b)
        assert {f.ct_id for f in flows(lab, nat_b)} == {f.ct_id for f in before_b}
        # Nothing left to delete: a second pass is a no-op.
        assert netns.call_in(lab.router, lambda: ct.delete_uplink_flows(nat_a)) == 0


def test_oif_source_selects_the_routers_own_flows(lab_factory: LabFactory) -> None:
    lab, client_a, _ = two_uplink_nat_lab(lab_factory)
    assert lab.lan is not None
    nat_a = lab.isps[0].address.ip
    server = lab.servers[1]
    with hold_server(lab, server), contextlib.ExitStack() as stack:
        forwarded = stack.enter_context(connect(lab.lan, client_a, server))
        own = stack.enter_context(connect(lab.router, nat_a, server))
        assert round_trip(forwarded) and round_trip(own)

        deleted = netns.call_in(lab.router, lambda: ct.delete_uplink_flows(None, oif_source=nat_a))

        assert deleted == 1
        left = flows(lab, nat_a)
        assert [(f.orig_src, f.dport) for f in left] == [(client_a, HOLD_PORT)]


def test_without_an_address_nothing_is_deleted(lab_factory: LabFactory) -> None:
    lab, client_a, client_b = two_uplink_nat_lab(lab_factory)
    udp_flows(lab, client_a, lab.servers[0], 20, 30000)
    udp_flows(lab, client_b, lab.servers[0], 20, 30000)
    wait_for(lambda: netns.call_in(lab.router, ct.count_flows) == 40)
    assert netns.call_in(lab.router, lambda: ct.delete_uplink_flows(None)) == 0
    assert netns.call_in(lab.router, ct.count_flows) == 40


def test_deleting_a_thousand_flows_is_quick(
    lab_factory: LabFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    lab, client_a, client_b = two_uplink_nat_lab(lab_factory)
    nat_a, nat_b = (isp.address.ip for isp in lab.isps)
    udp_flows(lab, client_a, lab.servers[0], 1000, 20000)
    udp_flows(lab, client_b, lab.servers[0], 300, 20000)
    wait_for(lambda: netns.call_in(lab.router, lambda: ct.count_flows(nat_a)) == 1000)
    assert netns.call_in(lab.router, lambda: ct.count_flows(nat_b)) == 300

    start = time.monotonic()
    deleted = netns.call_in(lab.router, lambda: ct.delete_uplink_flows(nat_a))
    elapsed = time.monotonic() - start

    assert deleted == 1000
    assert netns.call_in(lab.router, lambda: ct.count_flows(nat_a)) == 0
    assert netns.call_in(lab.router, lambda: ct.count_flows(nat_b)) == 300
    assert procfs_reply_dsts(lab).count(str(nat_b)) == 300
    with capsys.disabled():
        print(f"\nconntrack: deleted {deleted} entries in {elapsed * 1000:.1f} ms")
    assert elapsed < 2.0


def test_entries_in_a_conntrack_zone_are_deleted_too(lab_factory: LabFactory) -> None:
    lab, client_a, _ = two_uplink_nat_lab(lab_factory)
    nat_a = lab.isps[0].address.ip
    zoner = f"""\
table inet zoner {{
    chain pre {{
        type filter hook prerouting priority raw;
        ip saddr {client_a} ct zone set 7
    }}
}}
"""
    load_nft(lab.router, zoner)
    udp_flows(lab, client_a, lab.servers[0], 10, 40000)
    wait_for(lambda: len(flows(lab, nat_a)) == 10)
    assert {f.zone for f in flows(lab, nat_a)} == {7}
    # The lookup by tuple happens in the entry's zone: without CTA_ZONE none is found.
    assert netns.call_in(lab.router, lambda: ct.delete_uplink_flows(nat_a)) == 10
    assert flows(lab, nat_a) == []


def test_unanswered_flows_are_the_openings_not_the_answered(lab_factory: LabFactory) -> None:
    """A connection whose SYN the ISP drops is listed (still opening), an answered one not."""
    lab, client_a, client_b = two_uplink_nat_lab(lab_factory)
    assert lab.lan is not None
    server = lab.servers[0]
    load_nft(
        lab.isps[1].ns,
        "table inet t {\n chain f {\n type filter hook forward priority 0;\n"
        " tcp dport 9 drop\n }\n}\n",
    )
    opening = netns.socket_in(lab.lan, socket.AF_INET, socket.SOCK_STREAM)
    with hold_server(lab, server), connect(lab.lan, client_a, server) as answered, opening:
        assert round_trip(answered)
        opening.setblocking(False)
        opening.bind((str(client_b), 0))
        opening.connect_ex((str(server), 9))
        port = opening.getsockname()[1]

        def listed() -> list[tuple[IPv4Address | object, int | None, int | None]]:
            found = netns.call_in(lab.router, lambda: ct.unanswered_flows(socket.AF_INET))
            return [(f.orig_src, f.sport, f.dport) for f in found if f.proto == socket.IPPROTO_TCP]

        wait_for(lambda: listed() == [(client_b, port, 9)])
