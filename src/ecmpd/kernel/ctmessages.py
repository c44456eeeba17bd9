"""Pure: ctnetlink's wire format for conntrack entries (no sockets here).

The Flow an entry is read into, and the requests ecmpd sends: dumps filtered by the
kernel (an address, a mark, a status), a get by tuple, deletes and closes of exactly one
entry (its original tuple bytes sent back verbatim, plus its id). kernel/conntrack.py
sends them and reads the answers.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from ecmpd.kernel.transport import NLA_F_NESTED, attr, attr_nested, parse_attrs

IPAddress = IPv4Address | IPv6Address

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
# enum ctattr_type, ctattr_tuple, ctattr_ip, ctattr_l4proto, ctattr_filter
CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_PROTOINFO = 4
CTA_TIMEOUT = 7
CTA_MARK = 8
CTA_ID = 12
CTA_ZONE = 18
CTA_MARK_MASK = 21
CTA_FILTER = 25
CTA_STATUS_MASK = 26
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_FILTER_ORIG_FLAGS, CTA_FILTER_REPLY_FLAGS = 1, 2
FILTER_FLAG_IP_SRC, FILTER_FLAG_IP_DST = 1 << 0, 1 << 1
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL = 1, 1, 4
TCP_CONNTRACK_CLOSE = 8  # enum tcp_conntrack
IP_CT_TCP_FLAG_CLOSE_INIT = 0x04  # struct nf_ct_tcp_flags: a FIN or RST was seen
IPS_SEEN_REPLY, IPS_DST_NAT = 1 << 1, 1 << 5  # answered; destination-NATed (port forward)

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian, 0 here)
NEW_ENTRY = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW  # a dumped or got entry


@dataclass(frozen=True)
class Flow:
    """One conntrack entry, as much of it as cleanup needs."""

    proto: int
    orig_src: IPAddress
    orig_dst: IPAddress
    sport: int | None  # None for protocols without ports
    dport: int | None
    reply_dst: IPAddress  # the NAT address for masqueraded flows
    ct_id: int
    zone: int | None
    orig_tuple: bytes = field(repr=False)  # CTA_TUPLE_ORIG's payload, sent back on delete
    reply_src: IPAddress | None = None  # the host a port-forwarded connection was sent to
    reply_sport: int | None = None
    reply_dport: int | None = None
    status: int = 0  # IPS_* bits
    mark: int = 0
    tcp_state: int | None = None  # enum tcp_conntrack (TCP_CONNTRACK_CLOSE ...)


def family_of(address: IPAddress) -> int:
    """The socket family of an address (AF_INET or AF_INET6)."""
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def mark_filter(mark: int, mask: int) -> list[bytes]:
    """A dump's attributes for entries whose `ct mark & mask == mark`."""
    return [attr(CTA_MARK, struct.pack("!I", mark)), attr(CTA_MARK_MASK, struct.pack("!I", mask))]


def unanswered_filter() -> list[bytes]:
    """A dump's attributes for entries no answer has been seen for (CTA_STATUS_MASK, 5.19+)."""
    return [
        attr(CTA_STATUS, struct.pack("!I", 0)),
        attr(CTA_STATUS_MASK, struct.pack("!I", IPS_SEEN_REPLY)),
    ]


def address_filter(address: IPAddress, direction: int) -> list[bytes]:
    """A dump's attributes for entries with this original source (CTA_TUPLE_ORIG) or
    reply destination (CTA_TUPLE_REPLY) (CTA_FILTER, Linux 5.8+)."""
    reply = direction == CTA_TUPLE_REPLY
    if address.version == 4:
        ip_attr = CTA_IP_V4_DST if reply else CTA_IP_V4_SRC
    else:
        ip_attr = CTA_IP_V6_DST if reply else CTA_IP_V6_SRC
    tuple_attr = attr_nested(direction, attr_nested(CTA_TUPLE_IP, attr(ip_attr, address.packed)))
    flags = (
        attr(CTA_FILTER_REPLY_FLAGS, struct.pack("=I", FILTER_FLAG_IP_DST))
        if reply
        else attr(CTA_FILTER_ORIG_FLAGS, struct.pack("=I", FILTER_FLAG_IP_SRC))
    )
    return [tuple_attr, attr_nested(CTA_FILTER, flags)]


def get_message(
    direction: int, proto: int, src: IPAddress, dst: IPAddress, sport: int, dport: int
) -> bytes:
    """A get of the entry whose original (CTA_TUPLE_ORIG) or reply tuple is this one."""
    v4 = src.version == 4
    ip = attr_nested(
        CTA_TUPLE_IP,
        attr(CTA_IP_V4_SRC if v4 else CTA_IP_V6_SRC, src.packed)
        + attr(CTA_IP_V4_DST if v4 else CTA_IP_V6_DST, dst.packed),
    )
    ports = attr_nested(
        CTA_TUPLE_PROTO,
        attr(CTA_PROTO_NUM, bytes([proto]))
        + attr(CTA_PROTO_SRC_PORT, struct.pack("!H", sport))
        + attr(CTA_PROTO_DST_PORT, struct.pack("!H", dport)),
    )
    body = [attr_nested(direction, ip + ports)]
    return message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST, 1, family_of(src), body)


def dump_message(seq: int, family: int, attrs: list[bytes]) -> bytes:
    """A dump request of one family's entries, filtered by attrs."""
    return message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family, attrs)


def delete_message(flow: Flow, seq: int) -> bytes:
    """A delete request for exactly this entry: its original tuple, zone and id."""
    attrs = _exactly(flow, "delete")  # a delete without a tuple flushes the whole table
    attrs.append(attr(CTA_ID, struct.pack("!I", flow.ct_id)))
    family = family_of(flow.orig_src)
    return message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, family, attrs)


def close_message(flow: Flow, seq: int, timeout: int) -> bytes:
    """An update of exactly this entry (by tuple and zone): CLOSE, the timeout, close seen."""
    attrs = _exactly(flow, "update")
    attrs.append(attr(CTA_TIMEOUT, struct.pack("!I", timeout)))
    closing = bytes([IP_CT_TCP_FLAG_CLOSE_INIT] * 2)  # struct nf_ct_tcp_flags: flags, mask
    tcp = attr(CTA_PROTOINFO_TCP_STATE, bytes([TCP_CONNTRACK_CLOSE]))
    tcp += attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, closing)
    attrs.append(attr_nested(CTA_PROTOINFO, attr_nested(CTA_PROTOINFO_TCP, tcp)))
    family = family_of(flow.orig_src)
    return message(IPCTNL_MSG_CT_NEW, NLM_F_REQUEST | NLM_F_ACK, seq, family, attrs)


def _exactly(flow: Flow, what: str) -> list[bytes]:
    """The attributes naming exactly this entry: its original tuple (as the kernel sent
    it) and zone. Without a tuple the request would reach every entry: refused."""
    if not flow.orig_tuple:
        raise ValueError(f"refusing a conntrack {what} without a tuple")
    attrs = [attr(CTA_TUPLE_ORIG | NLA_F_NESTED, flow.orig_tuple)]
    if flow.zone is not None:
        attrs.append(attr(CTA_ZONE, struct.pack("!H", flow.zone)))
    return attrs


def message(command: int, flags: int, seq: int, family: int, attrs: Iterable[bytes]) -> bytes:
    """One ctnetlink request: netlink header, nfgenmsg, attributes."""
    payload = NFGENMSG.pack(family, 0, 0) + b"".join(attrs)
    msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | command
    return NLMSGHDR.pack(NLMSGHDR.size + len(payload), msg_type, flags, seq, 0) + payload


def parse_flow(body: bytes) -> Flow | None:
    """A Flow from a dumped entry (after its nfgenmsg); None when it lacks a tuple."""
    top = parse_attrs(body[NFGENMSG.size :])
    if CTA_TUPLE_ORIG not in top or CTA_TUPLE_REPLY not in top or CTA_ID not in top:
        return None
    orig = parse_attrs(top[CTA_TUPLE_ORIG])
    orig_src, orig_dst = _addresses(parse_attrs(orig.get(CTA_TUPLE_IP, b"")))
    reply = parse_attrs(top[CTA_TUPLE_REPLY])
    reply_src, reply_dst = _addresses(parse_attrs(reply.get(CTA_TUPLE_IP, b"")))
    reply_proto = parse_attrs(reply.get(CTA_TUPLE_PROTO, b""))
    proto = parse_attrs(orig.get(CTA_TUPLE_PROTO, b""))
    if orig_src is None or orig_dst is None or reply_dst is None or CTA_PROTO_NUM not in proto:
        return None
    return Flow(
        proto=proto[CTA_PROTO_NUM][0],
        orig_src=orig_src,
        orig_dst=orig_dst,
        sport=_be16(proto.get(CTA_PROTO_SRC_PORT)),
        dport=_be16(proto.get(CTA_PROTO_DST_PORT)),
        reply_dst=reply_dst,
        ct_id=struct.unpack("!I", top[CTA_ID])[0],
        zone=_be16(top.get(CTA_ZONE)),
        orig_tuple=top[CTA_TUPLE_ORIG],
        reply_src=reply_src,
        reply_sport=_be16(reply_proto.get(CTA_PROTO_SRC_PORT)),
        reply_dport=_be16(reply_proto.get(CTA_PROTO_DST_PORT)),
        status=_be32(top.get(CTA_STATUS)),
        mark=_be32(top.get(CTA_MARK)),
        tcp_state=_tcp_state(top.get(CTA_PROTOINFO)),
    )


def _tcp_state(protoinfo: bytes | None) -> int | None:
    """The TCP state (enum tcp_conntrack) of a CTA_PROTOINFO, None for other protocols."""
    tcp = parse_attrs(parse_attrs(protoinfo or b"").get(CTA_PROTOINFO_TCP, b""))
    state = tcp.get(CTA_PROTOINFO_TCP_STATE)
    return state[0] if state else None


def _addresses(ip: dict[int, bytes]) -> tuple[IPAddress | None, IPAddress | None]:
    """(source, destination) of a CTA_TUPLE_IP."""
    if CTA_IP_V4_SRC in ip and CTA_IP_V4_DST in ip:
        return _v4(ip[CTA_IP_V4_SRC]), _v4(ip[CTA_IP_V4_DST])
    if CTA_IP_V6_SRC in ip and CTA_IP_V6_DST in ip:
        return _v6(ip[CTA_IP_V6_SRC]), _v6(ip[CTA_IP_V6_DST])
    return None, None


@functools.lru_cache(maxsize=4096)
def _v4(packed: bytes) -> IPv4Address:
    """An IPv4 address (cached: a dump repeats the same few addresses thousands of times)."""
    return IPv4Address(packed)


@functools.lru_cache(maxsize=4096)
def _v6(packed: bytes) -> IPv6Address:
    """An IPv6 address (cached likewise)."""
    return IPv6Address(packed)


def _be32(data: bytes | None) -> int:
    """A big-endian u32 attribute, or 0 when absent."""
    return 0 if data is None else int(struct.unpack("!I", data[:4])[0])


def _be16(data: bytes | None) -> int | None:
    """A big-endian u16 attribute, or None when absent."""
    return None if data is None else int(struct.unpack("!H", data[:2])[0])
