"""A plain blocking rtnetlink socket: prebuilt requests, one ACK each; dumps read to DONE.

pyroute2 0.9.7 runs every synchronous request through an asyncio loop (~0.3 ms a
request) and decodes every dumped message with its own tables; ecmpd's messages are
small and fixed, so it packs and parses them itself (`routemsg`, `nexthop`, `rules`,
`observe`) and sends them here. An IPRoute remains the handle callers pass around: it
says which network namespace to talk to (`netlink_for`).

Namespace: a socket belongs to the namespace it was created in. `SocketsBeside` asks
the kernel for the namespace of an existing socket (SIOCGSKNS) and creates the raw one
there, so a caller on a thread outside that namespace never reaches its own.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from ecmpd.kernel import threadns

NETLINK_ROUTE = 0
NETLINK_GENERIC = 16  # genetlink: the MPTCP path manager (kernel.mptcp)
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors do not echo the request back
NETLINK_EXT_ACK = 11  # errors carry the kernel's message
NETLINK_GET_STRICT_CHK = 12
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
SIOCGSKNS = 0x894C
# Dump datagrams are at most 32 KiB (the kernel caps them); a message that does not fit
# a buffer this size is reported (MSG_TRUNC), never silently cut.
RECV_BYTES = 1 << 20
DUMP_TRIES = 3

HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_NLA = struct.Struct("=HH")
_NLA_U8 = struct.Struct("=HHBxxx")
_NLA_U16 = struct.Struct("=HHHxx")
_NLA_U32 = struct.Struct("=HHI")
_ERROR = struct.Struct("=i")
U16 = struct.Struct("=H")
U32 = struct.Struct("=I")

Message = tuple[int, bytes]  # (nlmsg_type, payload after the header)


class NetlinkError(OSError):
    """A request the kernel refused: `errno` is the kernel's error code."""


# --- attributes -----------------------------------------------------------------


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * (-length % 4)


def attr_u8(kind: int, value: int) -> bytes:
    """A u8 attribute."""
    return _NLA_U8.pack(5, kind, value)


def attr_u16(kind: int, value: int) -> bytes:
    """A u16 attribute."""
    return _NLA_U16.pack(6, kind, value)


def attr_u32(kind: int, value: int) -> bytes:
    """A u32 attribute."""
    return _NLA_U32.pack(8, kind, value)


def attr_str(kind: int, value: str) -> bytes:
    """A NUL-terminated string attribute."""
    return attr(kind, value.encode() + b"\0")


def attr_nested(kind: int, inner: bytes) -> bytes:
    """A nested attribute (the kernel's strict parsing insists on NLA_F_NESTED)."""
    return attr(kind | NLA_F_NESTED, inner)


def parse_attrs(data: bytes, pos: int = 0) -> dict[int, bytes]:
    """Attributes from `pos` to the end of `data`, by type (flags masked off)."""
    # Hot: ending an uplink's connections parses thousands of conntrack entries.
    out: dict[int, bytes] = {}
    last = len(data) - 4  # the last offset an attribute header fits at
    unpack = _NLA.unpack_from
    while pos <= last:
        length, kind = unpack(data, pos)
        if length < 4:
            break
        out[kind & NLA_TYPE_MASK] = data[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return out


def messages(data: bytes, error: type[OSError] = OSError) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, payload) of each netlink message in a datagram; `error` on a malformed one."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, _flags, seq, _pid = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            raise error(errno.EPROTO, "malformed netlink message")
        yield kind, seq, data[offset + HEADER.size : offset + length]
        offset += (length + 3) & ~3


def get_u32(attrs: dict[int, bytes], kind: int) -> int | None:
    """A u32 attribute's value, None when absent."""
    raw = attrs.get(kind)
    return None if raw is None else int(U32.unpack_from(raw)[0])


def get_str(attrs: dict[int, bytes], kind: int) -> str | None:
    """A string attribute without its NUL, None when absent."""
    raw = attrs.get(kind)
    return None if raw is None else raw.split(b"\0", 1)[0].decode()


# --- the socket -----------------------------------------------------------------


class NetlinkSocket:
    """A netlink socket (NETLINK_ROUTE unless opened otherwise); threads may share it (locked)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.bind((0, 0))
        self._seq = 0
        self._buf = bytearray(RECV_BYTES)
        self._lock = threading.RLock()

    @classmethod
    def open(cls, protocol: int = NETLINK_ROUTE) -> NetlinkSocket:
        """A socket in the calling thread's network namespace."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        try:
            return cls(sock)
        except BaseException:
            sock.close()
            raise

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self.sock.fileno() < 0

    def fileno(self) -> int:
        """The socket's descriptor."""
        return self.sock.fileno()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.sock.close()

    def request(self, msg_type: int, flags: int, body: bytes) -> list[Message]:
        """Send one request and return what came before its ACK; a refusal raises NetlinkError.

        The ACK is always asked for, so a GET ends the same way as a change does.
        """
        with self._lock:
            seq = self._send(msg_type, flags | NLM_F_REQUEST | NLM_F_ACK, body)
            answers: list[Message] = []
            while True:
                for kind, mflags, mseq, payload in self._recv():
                    if mseq != seq:
                        continue  # left over from a request abandoned midway
                    if kind == NLMSG_ERROR:
                        _check_error(mflags, payload)
                        return answers
                    answers.append((kind, payload))

    def dump(self, msg_type: int, body: bytes, *, strict: bool = False) -> list[Message]:
        """Every message of a dump; retried when the kernel says it changed meanwhile.

        `strict`: the kernel applies the request's filters (a route dump's table and
        protocol) itself, so a router with a full BGP table sends ecmpd its few routes
        instead of a million. Only for the dump: strict checking also refuses lookups
        that ecmpd relies on (RTM_F_LOOKUP_TABLE on IPv6).
        """
        with self._lock:
            if strict:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            try:
                for _ in range(DUMP_TRIES - 1):
                    answers, interrupted = self._dump_once(msg_type, body)
                    if not interrupted:
                        return answers
                # Still changing: a dump as consistent as pyroute2 would have returned.
                return self._dump_once(msg_type, body)[0]
            finally:
                if strict:
                    self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 0)

    def _dump_once(self, msg_type: int, body: bytes) -> tuple[list[Message], bool]:
        with self._lock:
            seq = self._send(msg_type, NLM_F_REQUEST | NLM_F_DUMP, body)
            answers: list[Message] = []
            interrupted = False
            while True:
                for kind, mflags, mseq, payload in self._recv():
                    if mseq != seq:
                        continue
                    interrupted = interrupted or bool(mflags & NLM_F_DUMP_INTR)
                    if kind == NLMSG_DONE:
                        code = _ERROR.unpack_from(payload)[0] if len(payload) >= 4 else 0
                        if code < 0:
                            raise NetlinkError(-code, os.strerror(-code))
                        return answers, interrupted
                    if kind == NLMSG_ERROR:
                        _check_error(mflags, payload)
                        return answers, interrupted
                    answers.append((kind, payload))

    def _send(self, msg_type: int, flags: int, body: bytes) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        self.sock.send(HEADER.pack(HEADER.size + len(body), msg_type, flags, self._seq, 0) + body)
        return self._seq

    def _recv(self) -> list[tuple[int, int, int, bytes]]:
        """The messages of one datagram as (type, flags, seq, payload)."""
        n = self.sock.recv_into(self._buf, RECV_BYTES, socket.MSG_TRUNC)
        if n > RECV_BYTES:
            raise NetlinkError(errno.EMSGSIZE, f"netlink datagram of {n} bytes truncated")
        data = memoryview(self._buf)[:n].tobytes()
        out = []
        pos = 0
        while pos + HEADER.size <= n:
            length, kind, flags, seq, _ = HEADER.unpack_from(data, pos)
            if length < HEADER.size:
                break
            out.append((kind, flags, seq, data[pos + HEADER.size : pos + length]))
            pos += (length + 3) & ~3
        return out


def _check_error(flags: int, payload: bytes) -> None:
    """Return on an ACK (error 0); raise NetlinkError with the kernel's message otherwise."""
    code = -_ERROR.unpack_from(payload)[0]
    if code == 0:
        return
    text = os.strerror(code)
    if flags & NLM_F_ACK_TLVS:
        # struct nlmsgerr, then the request's header (and body unless capped), then TLVs.
        echoed = HEADER.size if flags & NLM_F_CAPPED else HEADER.unpack_from(payload, 4)[0]
        msg = get_str(parse_attrs(payload, 4 + ((echoed + 3) & ~3)), NLMSGERR_ATTR_MSG)
        text = msg or text
    raise NetlinkError(code, text)


class SocketsBeside:
    """Raw sockets opened beside other sockets: one per network namespace met.

    `get(fd)` asks the kernel which namespace the socket `fd` is in (SIOCGSKNS) on every
    call (three cheap syscalls), so the answer is never stale, and opens a raw socket
    there the first time, from a throwaway thread if the caller is elsewhere.
    """

    def __init__(self) -> None:
        self._by_ns: dict[tuple[threadns.NsKey, int], NetlinkSocket] = {}
        self._lock = threading.Lock()

    def get(self, fileno: int, protocol: int = NETLINK_ROUTE) -> NetlinkSocket:
        """The raw socket of `protocol` in the namespace of the socket `fileno`."""
        try:
            ns_fd = fcntl.ioctl(fileno, SIOCGSKNS)
        except OSError as exc:
            # SIOCGSKNS needs CAP_NET_ADMIN, and so does setns(): a process without it
            # cannot have moved a thread, so every socket it has is in its own namespace.
            if exc.errno != errno.EPERM:
                raise
            ns_fd = -1
        try:
            if ns_fd >= 0:
                st = os.fstat(ns_fd)
                key = (st.st_dev, st.st_ino)
            else:
                key = threadns.thread_netns()
            with self._lock:
                nl = self._by_ns.get((key, protocol))
                if nl is None or nl.closed:
                    here = ns_fd < 0 or key == threadns.thread_netns()
                    nl = (
                        NetlinkSocket.open(protocol)
                        if here
                        else threadns.in_thread(
                            lambda: NetlinkSocket.open(protocol), "ecmpd-netlink-open", ns_fd
                        )
                    )
                    self._by_ns[(key, protocol)] = nl
                return nl
        finally:
            if ns_fd >= 0:
                os.close(ns_fd)

    def close(self) -> None:
        """Close every socket opened (idempotent)."""
        with self._lock:
            for nl in self._by_ns.values():
                nl.close()
            self._by_ns.clear()


_beside: weakref.WeakKeyDictionary[Any, SocketsBeside] = weakref.WeakKeyDictionary()
_beside_lock = threading.Lock()


def netlink_for(handle: Any, protocol: int = NETLINK_ROUTE) -> NetlinkSocket:
    """The raw socket to use for `handle`: itself, or one beside an IPRoute's socket.

    With another `protocol` (NETLINK_GENERIC), a socket of that protocol in the same
    namespace as `handle`, even when `handle` is a raw NETLINK_ROUTE socket.

    pyroute2 0.9.7 gives each thread its own socket, made in that thread's namespace,
    unless the IPRoute was built on a given one: `handle.fileno()` asked from the calling
    thread names the socket pyroute2 itself would use here, so the raw socket follows the
    same namespace. Those opened for an IPRoute are closed by `release(handle)` or when
    the IPRoute is garbage-collected.
    """
    if isinstance(handle, NetlinkSocket) and protocol == NETLINK_ROUTE:
        return handle
    with _beside_lock:
        sockets = _beside.get(handle)
        if sockets is None:
            sockets = _beside[handle] = SocketsBeside()
            weakref.finalize(handle, sockets.close)
    return sockets.get(handle.fileno(), protocol)


def release(handle: Any) -> None:
    """Close the raw sockets `netlink_for(handle)` opened beside an IPRoute, if any."""
    with _beside_lock:
        sockets = _beside.pop(handle, None)
    if sockets is not None:
        sockets.close()
