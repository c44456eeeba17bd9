"""Router advertisements in the lab: an ISP's router announcing itself as IPv6 default.

What `gateway6: ra` follows on a real line. The kernel of the receiving namespace
installs (lifetime > 0) or removes (lifetime 0) a `proto ra` default route via the
advertisement's link-local source, exactly as it does for a real ISP router.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv6Address

from ecmpd.lab import netns

ICMPV6_ROUTER_ADVERTISEMENT = 134
ALL_NODES = "ff02::1"
# Hosts ignore an advertisement that crossed a router (RFC 4861 6.1.2): it must arrive
# with the hop limit it was sent with, 255.
RA_HOP_LIMIT = 255
CUR_HOP_LIMIT = 64  # what the advertisement tells hosts to use for their own packets


def router_advertisement(lifetime_s: int) -> bytes:
    """An RA without options: a default router for `lifetime_s` seconds (0: withdrawn).

    The checksum stays 0: the kernel computes it on ICMPv6 raw sockets.
    """
    if not 0 <= lifetime_s <= 0xFFFF:
        raise ValueError(f"router lifetime {lifetime_s} s is outside 0..65535")
    return struct.pack(
        "!BBHBBHII",
        ICMPV6_ROUTER_ADVERTISEMENT,
        0,  # code
        0,  # checksum
        CUR_HOP_LIMIT,
        0,  # flags: no DHCPv6 (M/O)
        lifetime_s,
        0,  # reachable time: unspecified
        0,  # retransmission timer: unspecified
    )


def send_advertisement(ifname: str, source: IPv6Address, lifetime_s: int) -> None:
    """Send one router advertisement from `source` (link-local) out of ifname, in the
    calling thread's namespace."""
    if not source.is_link_local:
        raise ValueError(f"{source}: router advertisements come from link-local addresses")
    ifindex = socket.if_nametoindex(ifname)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, RA_HOP_LIMIT)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        sock.bind((str(source), 0, 0, ifindex))
        sock.sendto(router_advertisement(lifetime_s), (ALL_NODES, 0, 0, ifindex))


def advertise(ns: str, ifname: str, source: IPv6Address, lifetime_s: int) -> None:
    """Send one router advertisement from `source` (link-local) out of ns's ifname."""
    netns.call_in(ns, lambda: send_advertisement(ifname, source, lifetime_s))
