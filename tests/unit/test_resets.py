"""The pure side of ending connections: which host gets a probe, and the probe itself."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from ecmpd.health.packets import checksum
from ecmpd.kernel.ctmessages import IPS_DST_NAT
from ecmpd.kernel.nftdoc import KICK_ACK
from ecmpd.kernel.resets import HALF, Endpoints, kicks, lan_side, opening, probe_packet, probes
from ecmpd.kernel.sockdestroy import is_neighbour
from tests.unit.fixtures import LAN, PUBLIC, SERVER
from tests.unit.fixtures import ct_flow as flow


def test_the_lan_host_of_an_outgoing_connection_is_its_source() -> None:
    assert lan_side(flow()) == Endpoints(LAN, 40000, SERVER, 443)


def test_the_lan_host_of_a_port_forward_is_where_it_was_sent() -> None:
    remote = IPv4Address("203.0.113.9")
    forwarded = flow(
        status=IPS_DST_NAT,
        orig_src=remote,
        orig_dst=PUBLIC,
        sport=5555,
        dport=8080,
        reply_src=LAN,
        reply_sport=80,
        reply_dst=remote,
        reply_dport=5555,
    )
    assert lan_side(forwarded) == Endpoints(LAN, 80, remote, 5555)


def test_only_tcp_is_probed() -> None:
    assert lan_side(flow(proto=socket.IPPROTO_UDP)) is None
    assert lan_side(flow(sport=None)) is None


def tcp_of(packet: bytes) -> tuple[bytes, bytes, bytes]:
    """(source, destination, TCP segment) of an IPv4 or IPv6 packet."""
    if packet[0] >> 4 == 4:
        return packet[12:16], packet[16:20], packet[20:]
    return packet[8:24], packet[24:40], packet[40:]


def test_probe_is_a_pure_ack_from_the_peer_with_a_valid_checksum() -> None:
    for lan, peer in ((LAN, SERVER), (ip_address("2001:db8:200::5"), IPv6Address("2001:db8::1"))):
        ends = Endpoints(lan, 40000, peer, 443)
        src, dst, tcp = tcp_of(probe_packet(ends, seq=0xDEADBEEF, ack=7))
        assert (src, dst) == (peer.packed, lan.packed)
        sport, dport, seq, ack, offset, flags = struct.unpack_from("!HHIIBB", tcp)
        assert (sport, dport, seq, ack, offset >> 4, flags) == (443, 40000, 0xDEADBEEF, 7, 5, 0x10)
        assert len(tcp) == 20  # no data: a pure ACK changes nothing if it is ever accepted
        if lan.version == 4:
            pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
        else:
            pseudo = src + dst + struct.pack("!I3xB", len(tcp), 6)
        assert checksum(pseudo + tcp) == 0


def test_two_probes_half_the_sequence_space_apart_first_ones_first() -> None:
    draws = iter([100, 5, 200, 6])
    packets = probes([flow(), flow(proto=17), flow(sport=40001)], lambda _bits: next(draws))
    seqs = [struct.unpack_from("!I", tcp_of(p)[2], 4)[0] for _, p in packets]
    assert seqs == [100, 200, 100 + HALF, 200 + HALF]
    assert [e.lan_port for e, _ in packets] == [40000, 40001, 40000, 40001]


def test_a_neighbour_on_the_link_is_spared_anything_beyond_is_not() -> None:
    on_link = (ip_network("10.0.2.0/24"), ip_network("fd00:0:0:2::/64"), ip_network("10.9.9.9/32"))
    assert is_neighbour(ip_address("10.0.2.1"), on_link)  # the next router (BGP)
    assert is_neighbour(ip_address("fd00:0:0:2::1"), on_link)
    assert is_neighbour(ip_address("10.9.9.9"), on_link)  # a point-to-point peer
    assert is_neighbour(ip_address("fe80::1"), ())  # link-local: always on the link
    assert not is_neighbour(SERVER, on_link)
    assert not is_neighbour(ip_address("2001:db8::1"), on_link)


def test_a_connection_is_opening_until_conntrack_saw_an_answer() -> None:
    assert opening(flow(status=0))
    assert not opening(flow())  # answered
    assert not opening(flow(status=IPS_DST_NAT))  # a port forward: its LAN host answers
    assert not opening(flow(proto=socket.IPPROTO_UDP, status=0))


def test_opening_connections_get_one_kick_and_no_probe() -> None:
    draws = iter([100, 5, 77])
    flows = [flow(), flow(status=0, sport=40001), flow(status=0, proto=17)]
    kicked = kicks(flows, lambda _bits: next(draws))
    assert [e.lan_port for e, _ in kicked] == [40001]
    seq, ack = struct.unpack_from("!II", tcp_of(kicked[0][1])[2], 4)
    assert (seq, ack) == (100, KICK_ACK)  # its RST answer carries KICK_ACK: the table drops it
    assert [e.lan_port for e, _ in probes(flows, lambda _bits: next(draws))] == [40000, 40000]
