"""Ending the established connections of an uplink at once (`on_failure: reset`).

Forwarded TCP connections (router mode, or containers behind a host): while the
uplink's mark value is in the table's reset set, the reset chain answers a TCP packet
from the LAN side of one of its connections with a RST whose sequence number is the
packet's acknowledgment number: exactly what the client's stack accepts (RFC 5961; it
is the client's own rcv_nxt, which conntrack does not know). A busy connection sends
such a packet at once; an idle one is made to: ecmpd sends each LAN endpoint a pure
ACK from its peer's address with a sequence number it cannot accept, and the client
answers with an ACK of its current state (RFC 793) — which the reset chain turns into
a RST. Two probes per connection, at `seq` and `seq + 2**31`: no receive window is
2**31 wide, so one at least lies outside it (a pure ACK inside it changes nothing).

A connection still opening (its SYN sent by the uplink, no answer seen: conntrack's
IPS_SEEN_REPLY is clear) is not reset but moved: its entry is deleted first, then the
client gets one pure ACK it cannot accept. A socket in SYN-SENT answers that with a RST
and, if it has not retransmitted its SYN yet, retransmits it at once (TCP_TIMEOUT_MIN,
Linux's tcp_rcv_synsent_state_process); the SYN finds no entry, starts a fresh one and
leaves by the balancer's healthy uplinks, so `connect()` just completes a moment later.
(A reset would need the client's initial sequence number, which conntrack does not
export; `reject` on the retransmitted SYN gives ECONNREFUSED, which applications read as
"nobody listens".) The client's RST belongs to no entry: the table drops it by the
acknowledgment number the kick carries (KICK_ACK), so it never leaves unNATed.

The probes carry ecmpd's probe mark: the table never tracks them and never lets one
out of an uplink, and the probe rule routes them by the main table. The uplink's
entries that wait for no answer (UDP, ICMP) are deleted at once (those flows start
afresh on a healthy uplink); after a grace, the probed TCP connections' entries are
closed as conntrack closes a connection it saw reset (state CLOSE, gone 10 s later), not
deleted: a client answering after the grace (a loaded host) still meets its marked
entry and is reset. Deleted, its answer would start an unmarked flow the reset chain
never sees, leaving by the balancer (for IPv6 perhaps the dead uplink itself, kept in
the group when every IPv6 uplink is down: that client would hang). The router's own
sockets bound to the uplink's addresses are aborted (kernel/sockdestroy.py), except
those to a neighbour on the uplink's own link: a BGP session to the next router, a
modem's web page. They do not cross the uplink's path, and a routing daemon's session
is its own to judge (aborting it would withdraw the very routes that bring the uplink
back).
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from ecmpd.health.packets import checksum
from ecmpd.kernel import conntrack, sockdestroy
from ecmpd.kernel.ctmessages import IPS_DST_NAT, IPS_SEEN_REPLY, Flow
from ecmpd.kernel.nftdoc import KICK_ACK
from ecmpd.model import Family, PinReset

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Answers from the LAN arrive within a LAN round trip of the probe; this much after the
# last probe the entries are closed (a loaded client answering later still meets its own).
GRACE = 0.05
# How long a probed connection's closed entry stays (conntrack's own CLOSE timeout, which
# a late answer renews): that long a client answering late is still reset.
CLOSED_TIMEOUT = 10
TCP_ACK = 0x10
WINDOW = 0  # should a probe ever be accepted, the client probes the window: reset too
HALF = 1 << 31
_TCP = struct.Struct("!HHIIBBHHH")  # ports, seq, ack, offset, flags, window, sum, urgent
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")


@dataclass(frozen=True)
class Endpoints:
    """A connection as its LAN host sees it: the LAN host and the peer it talks to."""

    lan: IPAddress
    lan_port: int
    peer: IPAddress
    peer_port: int


def lan_side(flow: Flow) -> Endpoints | None:
    """The LAN host of a TCP connection: its source, or the host a port forward sent it to."""
    if flow.proto != socket.IPPROTO_TCP:
        return None
    if flow.status & IPS_DST_NAT:  # arrived by the uplink: the LAN host is the reply's source
        ports = (flow.reply_sport, flow.reply_dport)
        if flow.reply_src is None or ports[0] is None or ports[1] is None:
            return None
        return Endpoints(flow.reply_src, ports[0], flow.reply_dst, ports[1])
    if flow.sport is None or flow.dport is None:
        return None
    return Endpoints(flow.orig_src, flow.sport, flow.orig_dst, flow.dport)


def probe_packet(ends: Endpoints, seq: int, ack: int) -> bytes:
    """A whole IP packet: a pure ACK from the peer to the LAN host."""
    src, dst = ends.peer.packed, ends.lan.packed
    unsummed = _TCP.pack(ends.peer_port, ends.lan_port, seq, ack, 5 << 4, TCP_ACK, WINDOW, 0, 0)
    if ends.lan.version == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(unsummed))
    else:
        pseudo = src + dst + struct.pack("!I3xB", len(unsummed), socket.IPPROTO_TCP)
    tcp = unsummed[:16] + struct.pack("!H", checksum(pseudo + unsummed)) + unsummed[18:]
    if ends.lan.version == 4:  # the kernel fills in the IPv4 id, length and checksum
        return _IPV4.pack(0x45, 0, 0, 0, 0, 64, socket.IPPROTO_TCP, 0, src, dst) + tcp
    return _IPV6.pack(6 << 28, len(tcp), socket.IPPROTO_TCP, 64, src, dst) + tcp


def opening(flow: Flow) -> bool:
    """A LAN client's TCP connection whose SYN has had no answer (conntrack's SYN_SENT)."""
    return (
        flow.proto == socket.IPPROTO_TCP
        and not flow.status & (IPS_SEEN_REPLY | IPS_DST_NAT)
        and flow.sport is not None
        and flow.dport is not None
    )


def kicks(flows: Iterable[Flow], draw: Callable[[int], int]) -> list[tuple[Endpoints, bytes]]:
    """One unacceptable pure ACK per opening connection: its client retransmits its SYN."""
    out = []
    for flow in flows:
        ends = lan_side(flow)
        if ends is not None and opening(flow):
            out.append((ends, probe_packet(ends, draw(32), KICK_ACK)))
    return out


def unanswered(families: Iterable[Family]) -> list[Flow]:
    """The entries of these families no answer has been seen for (which of them are LAN
    clients' connections still opening is ecmpd.reconnects' choice)."""
    return [f for family in families for f in conntrack.unanswered_flows(int(family))]


def kick(
    flows: list[Flow], probe_mark: int, draw: Callable[[int], int] = random.getrandbits
) -> int:
    """Kicks each opening connection (entry kept): its client retransmits its SYN at
    once (ecmpd.reconnects). Returns how many kicks left."""
    return send_probes(kicks(flows, draw), probe_mark)


def probes(flows: Iterable[Flow], draw: Callable[[int], int]) -> list[tuple[Endpoints, bytes]]:
    """Two probes per established TCP connection (seq, seq + 2**31), first probes first."""
    firsts: list[tuple[Endpoints, bytes]] = []
    seconds: list[tuple[Endpoints, bytes]] = []
    for flow in flows:
        ends = lan_side(flow)
        if ends is None or opening(flow):
            continue
        seq, ack = draw(32), draw(32)
        firsts.append((ends, probe_packet(ends, seq, ack)))
        seconds.append((ends, probe_packet(ends, (seq + HALF) % (1 << 32), ack)))
    return firsts + seconds


def send_probes(packets: list[tuple[Endpoints, bytes]], mark: int) -> int:
    """Sends the probes from raw sockets carrying the probe mark; returns how many left."""
    sockets: dict[int, socket.socket] = {}
    sent = 0
    try:
        for ends, packet in packets:
            version = ends.lan.version
            if version not in sockets:
                family = socket.AF_INET if version == 4 else socket.AF_INET6
                raw = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
                # An unsigned 32-bit mark: Python's int path would refuse the top bit.
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, struct.pack("=I", mark))
                raw.setblocking(False)
                sockets[version] = raw
            try:
                sockets[version].sendto(packet, (str(ends.lan), 0))
                sent += 1
            except OSError:  # no route to that host, a full queue: that one is missed
                continue
    finally:
        for raw in sockets.values():
            raw.close()
    return sent


@dataclass(frozen=True)
class Ending:
    """What ends: one uplink's mark value, in some families, and its local addresses;
    or, with `only`, just a pin's TCP connections on it (ecmpd.pinresets)."""

    mark: int
    mask: int
    probe_mark: int
    families: tuple[Family, ...]
    sources: tuple[IPAddress, ...] = ()  # the router's own sockets from these are aborted
    on_link: tuple[IPNetwork, ...] = ()  # ... unless to a neighbour here (or link-local)
    only: tuple[PinReset, ...] = ()  # the table's pin resets whose connections end

    def covers(self, flow: Flow) -> bool:
        """Whether the flow is one of those that end (all of the uplink's, or a pin's)."""
        if not self.only:
            return True
        return (
            flow.proto == socket.IPPROTO_TCP
            and not flow.status & IPS_DST_NAT
            and any(
                p.covers(flow.orig_src, flow.orig_dst, flow.sport, flow.dport) for p in self.only
            )
        )


@dataclass(frozen=True)
class Begun:
    """What begin_ending did, and the entries finish_ending closes."""

    flows: tuple[Flow, ...]  # the probed TCP connections' entries, closed by finish
    probed: int
    sockets: int
    deleted: int = 0  # entries deleted at once: nothing waits for an answer from them
    kicked: int = 0  # opening connections moved (entry deleted, SYN retransmitted)
    unsent: int = 0  # probes and kicks the raw sockets could not send (no route, full queue)


@dataclass(frozen=True)
class Ended:
    """What end_connections did."""

    probed: int  # TCP connections that were sent probes
    deleted: int  # conntrack entries deleted (UDP, ICMP, TCP still opening)
    sockets: int  # local sockets aborted
    closed: int = 0  # the probed TCP connections' entries closed (CLOSE, CLOSED_TIMEOUT)
    kicked: int = 0  # connections still opening, moved to a healthy uplink
    unsent: int = 0  # probes and kicks not sent: their connections end on TCP's own time


def begin_ending(ending: Ending, draw: Callable[[int], int] = random.getrandbits) -> Begun:
    """Deletes the uplink's entries that wait for nothing (UDP, ICMP: those flows take a
    healthy uplink with their next packet; TCP connections still opening, which are then
    kicked), probes every established LAN TCP connection with its mark and aborts the
    local sockets.

    The table's reset set must hold the uplink's value already. Call it in the network
    namespace of the router (the calling thread's); finish_ending() after GRACE.
    """
    flows: list[Flow] = []
    for family in ending.families:
        marked = conntrack.marked_flows(ending.mark, ending.mask, int(family))
        flows += [f for f in marked if ending.covers(f)]
    probed: list[Flow] = []
    at_once: list[Flow] = []
    for flow in flows:
        (probed if lan_side(flow) is not None and not opening(flow) else at_once).append(flow)
    early = [f for f in at_once if opening(f)]
    # First gone: the SYN a kick makes its client retransmit must meet no entry.
    deleted = conntrack.delete_flows(at_once)
    packets = probes(probed, draw)
    batch = kicks(early, draw) + packets
    sent = send_probes(batch, ending.probe_mark)
    aborted = sum(
        sockdestroy.destroy_from(source, spare=ending.on_link) for source in ending.sources
    )
    return Begun(
        tuple(probed), len(packets) // 2, aborted, deleted, kicked=len(early),
        unsent=len(batch) - sent,
    )  # fmt: skip


def finish_ending(begun: Begun) -> Ended:
    """Closes the TCP entries begin_ending probed (conntrack's CLOSE, CLOSED_TIMEOUT s).

    Closed, not deleted: an answer to a probe that comes after the grace (a loaded LAN
    host or router) must still meet its marked entry, or it would start a fresh flow
    the reset chain never sees (IPv6: out by the balancer, maybe the dead uplink itself;
    IPv4: NATed anew by a healthy one). No new connection leaves by the uplink once it
    left the group, and reading the entries again would cost as much as the probes.
    """
    closed = conntrack.close_flows(list(begun.flows), CLOSED_TIMEOUT) if begun.flows else 0
    return Ended(
        begun.probed, begun.deleted, begun.sockets, closed, kicked=begun.kicked,
        unsent=begun.unsent,
    )  # fmt: skip


def end_connections(
    ending: Ending,
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[int], int] = random.getrandbits,
) -> Ended:
    """Ends every connection with the uplink's mark (begin, a grace for the answers, finish).

    The table's reset set must hold the uplink's value (desired_state's `ending`). For
    `failback: reset` as much as for a failure; call it in the router's namespace.
    """
    begun = begin_ending(ending, draw)
    if begun.probed:
        sleep(GRACE)
    return finish_ending(begun)
