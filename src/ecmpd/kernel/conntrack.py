"""conntrack over ctnetlink: reading and ending exactly the entries meant, never a flush.

When an uplink dies, NATed flows that left by it keep their conntrack entries (and
their now-useless source address) until they time out; deleting exactly those lets
the clients' next packets start fresh flows on a live uplink.

The few ctnetlink messages (kernel/ctmessages.py) are sent and read here, on a plain
netlink socket in the current network namespace (tests create it inside netns.call_in):
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
import itertools
import socket
import struct
from collections.abc import Callable, Iterator

from ecmpd.kernel.ctmessages import (
    CTA_TUPLE_ORIG,
    CTA_TUPLE_REPLY,
    IPS_SEEN_REPLY,
    NEW_ENTRY,
    Flow,
    IPAddress,
    address_filter,
    close_message,
    delete_message,
    dump_message,
    family_of,
    get_message,
    mark_filter,
    parse_flow,
    unanswered_filter,
)
from ecmpd.kernel.transport import messages

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # acks carry only the header of the request, not all of it
NLMSG_ERROR = 2
NLMSG_DONE = 3
ERRNO = struct.Struct("=i")
BATCH = 256  # deletes per datagram: its acks (36 bytes each) fit any receive buffer
RCVBUF = 1 << 20
RECV_SIZE = 1 << 16  # the kernel caps a dump datagram at 32 KiB
TIMEOUT = 10.0


class ConntrackError(OSError):
    """The kernel refused a ctnetlink request."""


def delete_uplink_flows(nat_address: IPAddress | None, oif_source: IPAddress | None = None) -> int:
    """Deletes the entries of flows that left by an uplink; returns how many were deleted.

    nat_address selects entries whose reply goes to it (masqueraded/snat flows, and
    the router's own flows from that address); oif_source selects entries whose
    original source is it. Flows routed out without NAT carry no uplink address and
    are not found. With neither address nothing is deleted (never a flush).
    """
    with _open() as sock:
        return _batched(sock, _select(sock, nat_address, oif_source), delete_message)


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
    with _open() as sock:
        flows = _dump(sock, family, mark_filter(mark, mask))
    return [f for f in flows if f.mark & mask == mark]


def unanswered_flows(family: int) -> list[Flow]:
    """The entries of one address family no answer has been seen for (IPS_SEEN_REPLY
    clear): kernel-filtered where the kernel knows CTA_STATUS_MASK (5.19+), else here."""
    with _open() as sock:
        flows = _dump(sock, family, unanswered_filter())
    return [f for f in flows if not f.status & IPS_SEEN_REPLY]


def find_flow(proto: int, src: IPAddress, dst: IPAddress, sport: int, dport: int) -> Flow | None:
    """The entry whose original (else reply) tuple is this one; None when there is none."""
    with _open() as sock:
        for direction in (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY):
            request = get_message(direction, proto, src, dst, sport, dport)
            sock.send(request)
            for msg_type, _seq, body in messages(sock.recv(RECV_SIZE), ConntrackError):
                if msg_type == NEW_ENTRY:
                    return parse_flow(body)
                if msg_type == NLMSG_ERROR:
                    (code,) = ERRNO.unpack_from(body)
                    if code and -code != errno.ENOENT:
                        raise ConntrackError(-code, f"conntrack get: {errno.errorcode.get(-code)}")
    return None


def delete_flows(flows: list[Flow]) -> int:
    """Deletes exactly these entries (by tuple and id); returns how many the kernel deleted."""
    with _open() as sock:
        return _batched(sock, flows, delete_message)


def close_flows(flows: list[Flow], timeout: int) -> int:
    """Closes these TCP entries (by tuple) as conntrack closes a connection it saw reset:
    state CLOSE, expiring in `timeout` s, the close seen (so a SYN of the same tuple starts
    a fresh entry instead of being ignored into this one); returns how many it found."""
    with _open() as sock:
        return _batched(sock, flows, lambda flow, seq: close_message(flow, seq, timeout))


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
    family = family_of(address)
    try:
        return _dump(sock, family, address_filter(address, direction))
    except ConntrackError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        # Kernels before 5.8 know no CTA_FILTER: dump all, the caller filters.
        return _dump(sock, family, [])


def _dump(sock: socket.socket, family: int, attrs: list[bytes]) -> list[Flow]:
    """Every entry of a (possibly filtered) dump."""
    seq = 1
    sock.send(dump_message(seq, family, attrs))
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
            if msg_type == NEW_ENTRY:
                flow = parse_flow(body)
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


def _raise_if_error(body: bytes, what: str) -> None:
    """Raises ConntrackError for an NLMSG_ERROR carrying a non-zero code."""
    (code,) = ERRNO.unpack_from(body)
    if code:
        raise ConntrackError(-code, f"{what}: {errno.errorcode.get(-code, code)}")
