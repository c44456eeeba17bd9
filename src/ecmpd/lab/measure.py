"""Measure how a lab's router spreads flows: by kernel lookups and by real connections.

Both run inside the lab's namespaces only. Kernel lookups ask the router's FIB with
full L4 keys (what a new connection would get); real connections go to an echo server
in the internet namespace that answers with the source address it saw, which names
the uplink (the lab's ISPs do not NAT).
"""

from __future__ import annotations

import random
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address

from ecmpd.kernel import nexthop as nl
from ecmpd.kernel.netlink import open_iproute
from ecmpd.lab import netns
from ecmpd.lab.layout import Lab

ECHO_PORT = 7007


@dataclass(frozen=True)
class TestFlow:
    """One TCP/UDP flow from the router to a lab server."""

    dst: IPv4Address
    ip_proto: int
    sport: int
    dport: int


def random_flows(lab: Lab, n: int, seed: int = 1) -> list[TestFlow]:
    """n distinct flows to the lab's servers, reproducible for a seed."""
    rng = random.Random(seed)
    flows: set[TestFlow] = set()
    while len(flows) < n:
        flows.add(
            TestFlow(
                dst=rng.choice(lab.servers),
                ip_proto=rng.choice((socket.IPPROTO_TCP, socket.IPPROTO_UDP)),
                sport=rng.randint(1024, 65535),
                dport=rng.choice((80, 443, 8080, rng.randint(1, 65535))),
            )
        )
    return sorted(flows, key=lambda f: (f.dst, f.ip_proto, f.sport, f.dport))


def kernel_split(lab: Lab, flows: list[TestFlow]) -> Counter[str]:
    """Flows per uplink name, as the router's kernel routes each new flow."""

    def lookup() -> Counter[str]:
        ipr = open_iproute()
        try:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            counts: Counter[str] = Counter()
            for f in flows:
                answer = nl.route_get(ipr, f.dst, ip_proto=f.ip_proto, sport=f.sport, dport=f.dport)
                counts[names.get(answer.ifindex or 0, "?")] += 1
            return counts
        finally:
            ipr.close()

    by_if = netns.call_in(lab.router, lookup)
    uplink_of = {isp.uplink_if: isp.name for isp in lab.isps}
    return Counter({uplink_of.get(ifname, ifname): n for ifname, n in by_if.items()})


@contextmanager
def echo_server(lab: Lab, address: IPv4Address | None = None) -> Iterator[IPv4Address]:
    """A TCP server in the internet namespace that replies with the client's address."""
    address = address or lab.servers[0]
    listener = netns.socket_in(lab.internet, socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((str(address), ECHO_PORT))
    listener.listen(512)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.sendall(peer[0].encode() + b"\n")

    thread = threading.Thread(target=serve, name="lab-echo", daemon=True)
    thread.start()
    try:
        yield address
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


def connection_split(lab: Lab, n: int, server: IPv4Address) -> Counter[str]:
    """Opens n real TCP connections from the router; counts them by the uplink they used."""
    by_source = {str(isp.address.ip): isp.name for isp in lab.isps}
    counts: Counter[str] = Counter()
    for _ in range(n):
        sock = netns.socket_in(lab.router, socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.settimeout(5)
            sock.connect((str(server), ECHO_PORT))
            seen = sock.makefile().readline().strip()
        counts[by_source.get(seen, seen)] += 1
    return counts


def shares(counts: Counter[str], names: list[str]) -> dict[str, float]:
    """Each name's fraction of the total (0 for names that got nothing)."""
    total = sum(counts.values()) or 1
    return {name: counts.get(name, 0) / total for name in names}
