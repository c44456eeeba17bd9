"""What every prober shares: its counters and sockets pinned to one uplink."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

from ecmpd.model import QUEUE_HANDLE, Family, IPAddress

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
    """A non-blocking socket sending by ifname only, from source if given; prepare runs first."""
    if source is not None:
        check_family(family, source)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        if prepare is not None:
            prepare(sock)
        # The device pins egress: the route lookup runs with oif = ifname and skips
        # routes by other devices (of a nexthop group it keeps the member on ifname,
        # never rehashed). For raw sockets it also filters receives to ifname. With no
        # route by ifname at all, the kernel takes the target for on-link and asks ARP
        # for it (lost): the source below is what still finds the gateway then.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        # Past ecmpd's own upload queue (`queue`, ecmpd.queues): a priority equal to its
        # HTB's handle goes to the HTB's direct queue, sent first and unshaped. A probe
        # measures the uplink, not the router's own backlog. (Elsewhere the same as 0.)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, QUEUE_HANDLE)
        if source is not None:
            if defer_port:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            # The source makes ecmpd's rule `from <source> lookup <uplink table>` route
            # the probe, gateway included, even while the balanced route leaves this
            # uplink out, and pass the answers' rp_filter check; for raw sockets it
            # also filters receives to this address.
            sock.bind(sockaddr(source, 0, ifname))
    except BaseException:
        sock.close()
        raise
    return sock
