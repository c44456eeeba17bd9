"""Targeted conntrack cleanup over ctnetlink: the flows that left by one uplink, never a flush.

When an uplink dies, NATed flows that left by it keep their conntrack entries (and
their now-useless source address) until they time out; deleting exactly those lets
the clients' next packets start fresh flows on a live uplink.

The few ctnetlink messages are built and read here with struct, on a plain netlink
socket in the current network namespace (tests create it inside netns.call_in):
pyroute2 0.9.7's NFCTSocket can dump with a kernel-side filter and delete, but it
sends one request per entry with an event loop set up and torn down around each
(~1 ms per entry), and it re-encodes tuples only for TCP/UDP/ICMP. Deletes here go
in batches and send back each entry's original tuple bytes verbatim, plus its id, so
a tuple since reused by a newer flow is never deleted. A close (an update: no
NLM_F_CREATE) only ever changes an entry that exists.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from ecmpd.kernel.transport import NLA_F_NESTED, attr, attr_nested, messages, parse_attrs

IPAddress = IPv4Address | IPv6Address

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # acks carry only the header of the request, not all of it
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
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
ERRNO = struct.Struct("=i")
BATCH = 256  # deletes per datagram: its acks (36 bytes each) fit any receive buffer
RCVBUF = 1 << 20
RECV_SIZE = 1 << 16  # the kernel caps a dump datagram at 32 KiB
TIMEOUT = 10.0


class ConntrackError(OSError):
    """The kernel refused a ctnetlink request."""


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


def delete_uplink_flows(nat_address: IPAddress | None, oif_source: IPAddress | None = None) -> int:
    """Deletes the entries of flows that left by an uplink; returns how many were deleted.

    nat_address selects entries whose reply goes to it (masqueraded/snat flows, and
    the router's own flows from that address); oif_source selects entries whose
    original source is it. Flows routed out without NAT carry no uplink address and
    are not found. With neither address nothing is deleted (never a flush).
    """
    with _open() as sock:
        return _batched(sock, _select(sock, nat_address, oif_source), _delete_message)


def uplink_flows(nat_address: IPAddress | None, oif_source: IPAddress | None = None) -> list[Flow]:
    """The entries delete_uplink_flows would delete, without deleting them."""
    with _open() as sock:
        return _select(sock, nat_address, oif_source)


def count_flows(nat_address: IPAddress | None = None, oif_source: IPAddress | None = None) -> int:
    """How many entries match (with no address: all IPv4 entries)."""
    with _open() as sock:
        if nat_address is None and oif_source is None:
            return len(_dump(sock, socket.AF_INET, []))
        return len(_select(sock, nat_address, oif_source))


def marked_flows(mark: int, mask: int, family: int) -> list[Flow]:
    """The entries of one address family whose `ct mark & mask == mark` (kernel-filtered)."""
    filters = [
        attr(CTA_MARK, struct.pack("!I", mark)),
        attr(CTA_MARK_MASK, struct.pack("!I", mask)),
    ]
    with _open() as sock:
        flows = _dump(sock, family, filters)
    return [f for f in flows if f.mark & mask == mark]


def unanswered_flows(family: int) -> list[Flow]:
    """The entries of one address family no answer has been seen for (IPS_SEEN_REPLY
    clear): kernel-filtered where the kernel knows CTA_STATUS_MASK (5.19+), else here."""
    filters = [
        attr(CTA_STATUS, struct.pack("!I", 0)),
        attr(CTA_STATUS_MASK, struct.pack("!I", IPS_SEEN_REPLY)),
    ]
    with _open() as sock:
        flows = _dump(sock, family, filters)
    return [f for f in flows if not f.status & IPS_SEEN_REPLY]


def find_flow(proto: int, src: IPAddress, dst: IPAddress, sport: int, dport: int) -> Flow | None:
    """The entry whose original (else reply) tuple is this one; None when there is none."""
    family = socket.AF_INET if src.version == 4 else socket.AF_INET6
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
    with _open() as sock:
        for direction in (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY):
            request = _message(
                IPCTNL_MSG_CT_GET, NLM_F_REQUEST, 1, family, [attr_nested(direction, ip + ports)]
            )
            sock.send(request)
            for msg_type, _seq, body in messages(sock.recv(RECV_SIZE), ConntrackError):
                if msg_type == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW:
                    return _parse_flow(body)
                if msg_type == NLMSG_ERROR:
                    (code,) = ERRNO.unpack_from(body)
                    if code and -code != errno.ENOENT:
                        raise ConntrackError(-code, f"conntrack get: {errno.errorcode.get(-code)}")
    return None


def delete_flows(flows: list[Flow]) -> int:
    """Deletes exactly these entries (by tuple and id); returns how many the kernel deleted."""
    with _open() as sock:
        return _batched(sock, flows, _delete_message)


def close_flows(flows: list[Flow], timeout: int) -> int:
    """Closes these TCP entries (by tuple) as conntrack closes a connection it saw reset:
    state CLOSE, expiring in `timeout` s, the close seen (so a SYN of the same tuple starts
    a fresh entry instead of being ignored into this one); returns how many it found."""
    with _open() as sock:
        return _batched(sock, flows, lambda flow, seq: _close_message(flow, seq, timeout))


@contextlib.contextmanager
def _open() -> Iterator[socket.socket]:
    """A ctnetlink socket in the calling thread's network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.bind((0, 0))
        sock.settimeout(TIMEOUT)
        yield sock
    finally:
        sock.close()


def _select(
    sock: socket.socket, reply_dst: IPAddress | None, orig_src: IPAddress | None
) -> list[Flow]:
    """Entries with that reply destination or that original source, each once."""
    found: dict[tuple[int, bytes], Flow] = {}
    if reply_dst is not None:
        for flow in _filtered_dump(sock, reply_dst, CTA_TUPLE_REPLY):
            if flow.reply_dst == reply_dst:  # the kernel's filter is trusted, not relied on
                found[flow.ct_id, flow.orig_tuple] = flow
    if orig_src is not None:
        for flow in _filtered_dump(sock, orig_src, CTA_TUPLE_ORIG):
            if flow.orig_src == orig_src:
                found[flow.ct_id, flow.orig_tuple] = flow
    return list(found.values())


def _filtered_dump(sock: socket.socket, address: IPAddress, direction: int) -> list[Flow]:
    """A dump the kernel filters by one address (CTA_FILTER, Linux 5.8+)."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    reply = direction == CTA_TUPLE_REPLY
    if family == socket.AF_INET:
        ip_attr = CTA_IP_V4_DST if reply else CTA_IP_V4_SRC
    else:
        ip_attr = CTA_IP_V6_DST if reply else CTA_IP_V6_SRC
    tuple_attr = attr_nested(direction, attr_nested(CTA_TUPLE_IP, attr(ip_attr, address.packed)))
    flags = (
        attr(CTA_FILTER_REPLY_FLAGS, struct.pack("=I", FILTER_FLAG_IP_DST))
        if reply
        else attr(CTA_FILTER_ORIG_FLAGS, struct.pack("=I", FILTER_FLAG_IP_SRC))
    )
    try:
        return _dump(sock, family, [tuple_attr, attr_nested(CTA_FILTER, flags)])
    except ConntrackError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        # Kernels before 5.8 know no CTA_FILTER: dump all, the caller filters.
        return _dump(sock, family, [])


def _dump(sock: socket.socket, family: int, attrs: list[bytes]) -> list[Flow]:
    """Every entry of a (possibly filtered) dump."""
    seq = 1
    sock.send(_message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family, attrs))
    flows: list[Flow] = []
    while True:
        data = sock.recv(RECV_SIZE)
        for msg_type, msg_seq, body in messages(data, ConntrackError):
            if msg_seq != seq:
                continue
            if msg_type == NLMSG_DONE:
                if len(body) >= ERRNO.size:  # a dump that failed midway says so here
                    _raise_if_error(body, "conntrack dump")
                return flows
            if msg_type == NLMSG_ERROR:
                _raise_if_error(body, "conntrack dump")
                continue
            if msg_type == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW:
                flow = _parse_flow(body)
                if flow is not None:
                    flows.append(flow)


def _batched(sock: socket.socket, flows: list[Flow], build: Callable[[Flow, int], bytes]) -> int:
    """Sends build(flow, seq) for each flow, BATCH per datagram; returns how many succeeded."""
    done = 0
    seqs = itertools.count(2)
    for start in range(0, len(flows), BATCH):
        pending: dict[int, Flow] = {}
        chunk: list[bytes] = []
        for flow in flows[start : start + BATCH]:
            seq = next(seqs)
            pending[seq] = flow
            chunk.append(build(flow, seq))
        sock.send(b"".join(chunk))
        done += _collect_acks(sock, pending)
    return done


def _delete_message(flow: Flow, seq: int) -> bytes:
    """A delete request for exactly this entry: its original tuple, zone and id."""
    family = socket.AF_INET if flow.orig_src.version == 4 else socket.AF_INET6
    if not flow.orig_tuple:  # a delete without a tuple flushes the whole table
        raise ValueError("refusing a conntrack delete without a tuple")
    attrs = [attr(CTA_TUPLE_ORIG | NLA_F_NESTED, flow.orig_tuple)]
    if flow.zone is not None:
        attrs.append(attr(CTA_ZONE, struct.pack("!H", flow.zone)))
    attrs.append(attr(CTA_ID, struct.pack("!I", flow.ct_id)))
    return _message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, family, attrs)


def _close_message(flow: Flow, seq: int, timeout: int) -> bytes:
    """An update of exactly this entry (by tuple and zone): CLOSE, the timeout, close seen."""
    family = socket.AF_INET if flow.orig_src.version == 4 else socket.AF_INET6
    if not flow.orig_tuple:
        raise ValueError("refusing a conntrack update without a tuple")
    attrs = [attr(CTA_TUPLE_ORIG | NLA_F_NESTED, flow.orig_tuple)]
    if flow.zone is not None:
        attrs.append(attr(CTA_ZONE, struct.pack("!H", flow.zone)))
    attrs.append(attr(CTA_TIMEOUT, struct.pack("!I", timeout)))
    closing = bytes([IP_CT_TCP_FLAG_CLOSE_INIT] * 2)  # struct nf_ct_tcp_flags: flags, mask
    tcp = attr(CTA_PROTOINFO_TCP_STATE, bytes([TCP_CONNTRACK_CLOSE]))
    tcp += attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, closing)
    attrs.append(attr_nested(CTA_PROTOINFO, attr_nested(CTA_PROTOINFO_TCP, tcp)))
    return _message(IPCTNL_MSG_CT_NEW, NLM_F_REQUEST | NLM_F_ACK, seq, family, attrs)


def _collect_acks(sock: socket.socket, pending: dict[int, Flow]) -> int:
    """Reads one ack per pending request; counts successes (gone already is not an error)."""
    done = 0
    failure: ConntrackError | None = None
    while pending:
        for msg_type, seq, body in messages(sock.recv(RECV_SIZE), ConntrackError):
            if msg_type != NLMSG_ERROR or pending.pop(seq, None) is None:
                continue
            (code,) = ERRNO.unpack_from(body)
            if code == 0:
                done += 1
            elif -code != errno.ENOENT and failure is None:  # ENOENT: expired or reused
                failure = ConntrackError(-code, f"conntrack: {errno.errorcode.get(-code)}")
    if failure is not None:
        raise failure
    return done


def _message(command: int, flags: int, seq: int, family: int, attrs: Iterable[bytes]) -> bytes:
    """One ctnetlink request: netlink header, nfgenmsg, attributes."""
    payload = NFGENMSG.pack(family, 0, 0) + b"".join(attrs)
    msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | command
    return NLMSGHDR.pack(NLMSGHDR.size + len(payload), msg_type, flags, seq, 0) + payload


def _raise_if_error(body: bytes, what: str) -> None:
    """Raises ConntrackError for an NLMSG_ERROR carrying a non-zero code."""
    (code,) = ERRNO.unpack_from(body)
    if code:
        raise ConntrackError(-code, f"{what}: {errno.errorcode.get(-code, code)}")


def _parse_flow(body: bytes) -> Flow | None:
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
