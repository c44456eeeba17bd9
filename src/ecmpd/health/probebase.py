"""What every prober shares: its counters and sockets pinned to one uplink."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

from ecmpd.model import Family, IPAddress

# Not in every Python's socket module (linux/in.h): bind() records the address but
# leaves the port to connect(), which picks one unique for the whole 4-tuple, so
# many probes from one source address never exhaust the ephemeral ports.
IP_BIND_ADDRESS_NO_PORT: Final = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

SockAddr = tuple[str, int] | tuple[str, int, int, int]


@dataclass(slots=True)
class ProbeCounters:
    """Running totals of one prober, for metrics; they only ever grow."""

    sent: int = 0  # probes that left (the kernel took the echo or the SYN)
    received: int = 0  # answers that settled a probe in time
    late: int = 0  # icmp: answers to a probe that had already timed out
    mismatched: int = 0  # icmp: echo replies with a wrong id, sequence or source,
    # duplicates and broken ones; other programs' pings through the uplink land here too
    errors: int = 0  # probes failed by an error: the kernel refused to send (no route,
    # address gone) or, tcp, a hard ICMP error ended the connect
    refused: int = 0  # tcp: answered with a RST (also counted in received)


def check_family(family: Family, address: IPAddress) -> None:
    """Raise ValueError unless the address belongs to the family."""
    if (family is Family.INET) != isinstance(address, IPv4Address):
        raise ValueError(f"{address} is not an {family.name} address")


def sockaddr(address: IPAddress, port: int, ifname: str) -> SockAddr:
    """The socket address of address:port; IPv6 link-local ones are scoped to ifname."""
    if isinstance(address, IPv4Address):
        return (str(address), port)
    scope = socket.if_nametoindex(ifname) if address.is_link_local else 0
    return (str(address), port, 0, scope)


def bound_socket(
    family: Family,
    kind: int,
    proto: int,
    ifname: str,
    source: IPAddress | None,
    *,
    prepare: Callable[[socket.socket], None] | None = None,
    defer_port: bool = False,
) -> socket.socket:
    """A non-blocking socket that sends by ifname only, from source if one is given.

    prepare runs first, before the socket is bound to anything.
    """
    if source is not None:
        check_family(family, source)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        if prepare is not None:
            prepare(sock)
        # The device pins egress whatever the routing tables say (the lookup is made
        # with oif = ifname and skips routes by other devices) and, for raw sockets,
        # also filters what is received to packets that came in on ifname.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        if source is not None:
            if defer_port:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            # The source makes ecmpd's reply rule (from <source> lookup <table>) bring
            # the answers back by this uplink, and filters raw receives to it.
            sock.bind(sockaddr(source, 0, ifname))
    except BaseException:
        sock.close()
        raise
    return sock
