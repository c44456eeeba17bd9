"""Closing local sockets bound to an address with an error, as `ss -K` does (SOCK_DESTROY).

A local TCP socket whose source address belongs to an uplink that died is pinned there
by its reply rule and would hang until TCP gives up (many minutes). SOCK_DESTROY
(CONFIG_INET_DIAG_DESTROY) aborts it: the application's next call fails with
ECONNABORTED and it reconnects, by a healthy uplink. Listening sockets and unconnected
UDP sockets are left alone (a server bound to the address keeps listening).

The sock_diag messages are packed here with struct on a plain netlink socket in the
calling thread's network namespace: pyroute2 0.9.7's DiagSocket dumps but does not
destroy.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from ecmpd.kernel.transport import messages

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
SOCK_DESTROY = 21
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSGHDR = struct.Struct("=IHHII")
REQ_HEAD = struct.Struct("=BBBxI")  # family, protocol, ext, pad, states
MSG_HEAD = struct.Struct("=BBBB")  # family, state, timer, retrans
SOCKID_LEN = 48  # sport, dport (be16), src, dst (16 bytes each), if, cookie[2]
TCP_ESTABLISHED, TCP_TIME_WAIT, TCP_CLOSE, TCP_LISTEN = 1, 6, 7, 10
# Every TCP state but LISTEN, CLOSE and TIME_WAIT: the sockets of connections.
TCP_CONNECTED = ((1 << 12) - 1) & ~(1 << TCP_LISTEN | 1 << TCP_CLOSE | 1 << TCP_TIME_WAIT | 1)
UDP_CONNECTED = 1 << TCP_ESTABLISHED  # a connected UDP socket shows as ESTABLISHED
TIMEOUT = 5.0
RECV_SIZE = 1 << 16


@dataclass(frozen=True)
class LocalSocket:
    """One local socket as sock_diag reports it (enough to destroy exactly it)."""

    family: int
    protocol: int
    state: int
    src: IPAddress
    sport: int
    dst: IPAddress
    dport: int
    sockid: bytes  # the kernel's inet_diag_sockid, sent back verbatim (with its cookie)


def sockets_from(source: IPAddress) -> list[LocalSocket]:
    """Connected TCP and UDP sockets whose local address is `source`."""
    family = socket.AF_INET if source.version == 4 else socket.AF_INET6
    with _open() as sock:
        found = _dump(sock, family, socket.IPPROTO_TCP, TCP_CONNECTED)
        found += _dump(sock, family, socket.IPPROTO_UDP, UDP_CONNECTED)
    return [s for s in found if s.src == source]


def destroy(sockets: list[LocalSocket]) -> int:
    """Aborts each socket (its owner sees ECONNABORTED); returns how many were destroyed."""
    destroyed = 0
    with _open() as sock:
        for seq, target in enumerate(sockets, start=2):
            request = REQ_HEAD.pack(target.family, target.protocol, 0, 1 << target.state)
            sock.send(
                _message(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, seq, request + target.sockid)
            )
            code = _ack(sock, seq)
            if code == 0:
                destroyed += 1
            elif code not in (errno.ENOENT, errno.ESRCH):  # gone already: fine
                raise OSError(code, f"SOCK_DESTROY: {errno.errorcode.get(code, code)}")
    return destroyed


def destroy_from(source: IPAddress, spare: Collection[IPNetwork] = ()) -> int:
    """Aborts every connected socket whose local address is `source`, but those to a
    peer in `spare` or at a link-local address (neighbours on the link)."""
    return destroy([s for s in sockets_from(source) if not is_neighbour(s.dst, spare)])


def is_neighbour(peer: IPAddress, on_link: Collection[IPNetwork]) -> bool:
    """Whether the peer is on the link: link-local, or in one of its prefixes."""
    return peer.is_link_local or any(peer in net for net in on_link)


@contextlib.contextmanager
def _open() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        sock.bind((0, 0))
        sock.settimeout(TIMEOUT)
        yield sock
    finally:
        sock.close()


def _message(msg_type: int, flags: int, seq: int, payload: bytes) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(payload), msg_type, flags, seq, 0) + payload


def _dump(sock: socket.socket, family: int, protocol: int, states: int) -> list[LocalSocket]:
    """Every socket of a family and protocol in the given states."""
    request = REQ_HEAD.pack(family, protocol, 0, states) + bytes(SOCKID_LEN)
    sock.send(_message(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, request))
    found: list[LocalSocket] = []
    while True:
        for msg_type, seq, body in messages(sock.recv(RECV_SIZE)):
            if seq != 1:
                continue
            if msg_type == NLMSG_DONE:
                return found
            if msg_type == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", body)
                if code:
                    raise OSError(-code, f"sock_diag dump: {errno.errorcode.get(-code, code)}")
                continue
            if msg_type == SOCK_DIAG_BY_FAMILY:
                found.append(_parse(body, protocol))


def _parse(body: bytes, protocol: int) -> LocalSocket:
    """A LocalSocket from an inet_diag_msg."""
    family, state, _timer, _retrans = MSG_HEAD.unpack_from(body)
    sockid = body[MSG_HEAD.size : MSG_HEAD.size + SOCKID_LEN]
    sport, dport = struct.unpack_from("!HH", sockid)
    size = 4 if family == socket.AF_INET else 16
    src = ip_address(sockid[4 : 4 + size])
    dst = ip_address(sockid[20 : 20 + size])
    return LocalSocket(family, protocol, state, src, sport, dst, dport, sockid)


def _ack(sock: socket.socket, seq: int) -> int:
    """The error code (positive errno, 0 for success) of the ack to request `seq`."""
    while True:
        for msg_type, got, body in messages(sock.recv(RECV_SIZE)):
            if msg_type == NLMSG_ERROR and got == seq:
                code: int = struct.unpack_from("=i", body)[0]
                return -code
