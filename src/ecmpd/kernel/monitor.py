"""Kernel change events (links, addresses, routes, nexthops) from rtnetlink, for asyncio.

Kernel facts the consumer must know (Linux 6.18, checked by tests/integration/test_monitor.py):

- A device losing carrier, going admin-down or being deleted makes the kernel flush every
  nexthop object on it, the groups left empty and the routes using either, WITHOUT any
  RTM_DELNEXTHOP or RTM_DELROUTE (nexthop_flush_dev passes no nl_info). The RTM_NEWLINK is
  the only trace and is sent after the flush: on `LinkEvent.usable` False, every nexthop on
  that device is already gone. Groups that keep other members shrink silently as well.
- The kernel refuses to create a nexthop on a device without carrier ("Carrier for nexthop
  device is down") and does not bring flushed ones back: re-create them when carrier returns.
- Carrier changes go through linkwatch. "Urgent" ones (a device whose ifindex differs from
  its iflink, like the lab's veths) are applied at once; others (physical NICs losing
  carrier) are batched to one linkwatch run per second host-wide: up to 1 s late.
- An explicit `ip nexthop del` does send RTM_DELNEXTHOP, plus RTM_NEWNEXTHOP for each group
  that shrank; the routes deleted with it are still not announced.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network, ip_interface
from types import TracebackType
from typing import Any

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from ecmpd.kernel.nexthop import RTM_DELNEXTHOP, RTM_NEWNEXTHOP, NhMsg
from ecmpd.kernel.routemsg import (
    RTM_DELROUTE,
    RTM_F_CLONED,
    RTM_NEWROUTE,
    RtMsg,
    to_addr,
)
from ecmpd.model import RTPROT_ECMPD, IPAddress

log = logging.getLogger(__name__)

RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = (
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
)
RTNLGRP_NEXTHOP = 32  # above 31: not expressible in the bind() bitmask
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
SO_RCVBUFFORCE = 33
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
RCVBUF_BYTES = 4 << 20  # a route flap on a full table must not overflow it
RECV_BYTES = 256 << 10  # rtnetlink notifications are far smaller; MSG_TRUNC catches more
FAIRNESS_BATCH = 64  # datagrams read back to back before letting other tasks run
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr


@dataclass(frozen=True)
class LinkEvent:
    """A device appeared, changed or was deleted."""

    index: int
    ifname: str
    up: bool  # IFF_UP: administratively up
    carrier: bool
    deleted: bool

    @property
    def usable(self) -> bool:
        """False when the kernel has (silently) flushed every nexthop object on the device."""
        return self.up and self.carrier and not self.deleted


@dataclass(frozen=True)
class RouteEvent:
    """A default route or one of ecmpd's was added, replaced or deleted (no clones)."""

    family: int
    table: int
    dst: IPv4Network | IPv6Network
    gateway: IPAddress | None
    ifindex: int | None  # None for multipath routes and routes using a nexthop object
    protocol: int
    deleted: bool
    metric: int = 0
    nhid: int | None = None


@dataclass(frozen=True)
class NexthopEvent:
    """A nexthop object or group was created, changed or deleted (explicitly, see above)."""

    id: int
    protocol: int
    deleted: bool


@dataclass(frozen=True)
class AddressEvent:
    """An address was added to or deleted from a device."""

    index: int
    address: IPv4Interface | IPv6Interface
    deleted: bool


@dataclass(frozen=True)
class Resync:
    """Events were lost (the socket overflowed): re-read everything from the kernel."""

    reason: str


KernelEvent = LinkEvent | RouteEvent | NexthopEvent | AddressEvent | Resync


def _decoded(cls: Any, data: bytes, offset: int) -> Any:
    """One message of the datagram decoded with a pyroute2 message class."""
    msg = cls(data, offset=offset)
    msg.decode()
    return msg


def _link(kind: int, data: bytes, offset: int) -> LinkEvent | None:
    """A LinkEvent from RTM_NEWLINK/RTM_DELLINK; None for per-family (bridge) variants."""
    msg = _decoded(ifinfmsg, data, offset)
    if msg["family"] != socket.AF_UNSPEC:
        return None
    flags = msg["flags"]
    carrier = msg.get_attr("IFLA_CARRIER")
    return LinkEvent(
        index=msg["index"],
        ifname=msg.get_attr("IFLA_IFNAME") or f"if{msg['index']}",
        up=bool(flags & IFF_UP),
        carrier=bool(flags & IFF_LOWER_UP) if carrier is None else bool(carrier),
        deleted=kind == RTM_DELLINK,
    )


def _address(kind: int, data: bytes, offset: int) -> AddressEvent | None:
    """An AddressEvent from RTM_NEWADDR/RTM_DELADDR."""
    msg = _decoded(ifaddrmsg, data, offset)
    # IFA_ADDRESS is the peer on point-to-point IPv4 links; IFA_LOCAL is ours.
    addr = msg.get_attr("IFA_LOCAL") if msg["family"] == socket.AF_INET else None
    addr = addr or msg.get_attr("IFA_ADDRESS")
    if addr is None:
        return None
    return AddressEvent(
        index=msg["index"],
        address=ip_interface(f"{addr}/{msg['prefixlen']}"),
        deleted=kind == RTM_DELADDR,
    )


def _route(kind: int, data: bytes, offset: int) -> RouteEvent | None:
    """A RouteEvent for a default route or one of ecmpd's; None for any other route.

    Read from the fixed header first: a routing daemon loading a full table sends a
    million notifications, and decoding each would cost the daemon seconds of CPU.
    """
    dst_len, proto = data[offset + _HEADER.size + 1], data[offset + _HEADER.size + 5]
    if dst_len != 0 and proto != RTPROT_ECMPD:
        return None
    msg = _decoded(RtMsg, data, offset)
    family = msg["family"]
    if family not in (socket.AF_INET, socket.AF_INET6) or msg["flags"] & RTM_F_CLONED:
        return None
    inet = family == socket.AF_INET
    dst = to_addr(msg.get_attr("RTA_DST")) or ("0.0.0.0" if inet else "::")
    prefix = f"{dst}/{msg['dst_len']}"
    table = msg.get_attr("RTA_TABLE")
    return RouteEvent(
        family=family,
        table=msg["table"] if table is None else table,
        dst=IPv4Network(prefix, strict=False) if inet else IPv6Network(prefix, strict=False),
        gateway=to_addr(msg.get_attr("RTA_GATEWAY")),
        ifindex=msg.get_attr("RTA_OIF"),
        protocol=msg["proto"],
        deleted=kind == RTM_DELROUTE,
        metric=msg.get_attr("RTA_PRIORITY") or 0,
        nhid=msg.get_attr("RTA_NH_ID"),
    )


def _nexthop(kind: int, data: bytes, offset: int) -> NexthopEvent | None:
    """A NexthopEvent from RTM_NEWNEXTHOP/RTM_DELNEXTHOP."""
    msg = _decoded(NhMsg, data, offset)
    nhid = msg.get_attr("NHA_ID")
    if nhid is None:
        return None
    return NexthopEvent(id=nhid, protocol=msg["protocol"], deleted=kind == RTM_DELNEXTHOP)


_PARSERS: dict[int, Callable[[int, bytes, int], KernelEvent | None]] = {
    RTM_NEWLINK: _link,
    RTM_DELLINK: _link,
    RTM_NEWADDR: _address,
    RTM_DELADDR: _address,
    RTM_NEWROUTE: _route,
    RTM_DELROUTE: _route,
    RTM_NEWNEXTHOP: _nexthop,
    RTM_DELNEXTHOP: _nexthop,
}


def parse_datagram(data: bytes) -> list[KernelEvent]:
    """The events in one netlink datagram (several messages may share it); others skipped."""
    events: list[KernelEvent] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind = _HEADER.unpack_from(data, offset)[:2]
        if length < _HEADER.size or offset + length > len(data):
            log.warning("malformed netlink message at offset %d, rest of datagram dropped", offset)
            break
        parser = _PARSERS.get(kind)
        if parser is not None:
            try:
                event = parser(kind, data, offset)
            except Exception:
                # One undecodable message must not end the daemon's only event source.
                log.exception("cannot decode rtnetlink message type %d", kind)
                event = None
            if event is not None:
                events.append(event)
        offset += (length + 3) & ~3  # NLMSG_ALIGN
    return events


class KernelMonitor:
    """rtnetlink notifications as an async stream; `async with`, then iterate `events()`.

    One consumer at a time. The monitor owns the socket (given or its own) and closes it.
    """

    def __init__(self, sock: socket.socket | None = None, *, rcvbuf: int = RCVBUF_BYTES) -> None:
        """Wraps a NETLINK_ROUTE socket (its namespace is what is watched), or opens one here."""
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
        self._sock = sock
        self._rcvbuf = rcvbuf
        self._buf = bytearray(RECV_BYTES)
        self._pending: deque[KernelEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._entered = False
        self._closed = False
        self._unyielded = 0  # datagrams read since the loop last ran other tasks

    async def __aenter__(self) -> KernelMonitor:
        """Subscribes to link, address, route and nexthop notifications."""
        try:
            self._subscribe()
        except BaseException:
            self.close()  # ours either way: the caller has no `async with` body to clean up
            raise
        self._entered = True
        return self

    def _subscribe(self) -> None:
        """Sizes the receive buffer and joins the multicast groups."""
        sock = self._sock
        sock.setblocking(False)
        try:
            # FORCE goes past net.core.rmem_max (needs CAP_NET_ADMIN), which is often
            # smaller than a burst of route changes.
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self._rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
        sock.bind((0, GROUPS))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NEXTHOP)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Ends the stream (a consumer waiting sees it end) and closes the socket."""
        self.close()

    def close(self) -> None:
        """Ends the stream and closes the socket; safe to call again."""
        self._closed = True
        self._stop_waiting()
        self._sock.close()

    def events(self) -> AsyncIterator[KernelEvent]:
        """The event stream; cancelling a wait for the next event loses nothing."""
        if not self._entered:
            raise RuntimeError("use KernelMonitor in `async with` before reading events")
        return self

    def __aiter__(self) -> AsyncIterator[KernelEvent]:
        """The monitor is its own iterator."""
        return self

    async def __anext__(self) -> KernelEvent:
        """The next event, waiting for the kernel without blocking the loop."""
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            if self._receive():
                await self._share_loop()
            else:
                self._unyielded = 0
                await self._readable()
        await self._share_loop()
        return self._pending.popleft()

    async def _share_loop(self) -> None:
        """Lets other tasks run after every FAIRNESS_BATCH datagrams read back to back."""
        # During a flood the socket never runs dry, so nothing else here would ever
        # suspend and the daemon's other tasks (probes, timers) would starve.
        if self._unyielded >= FAIRNESS_BATCH:
            self._unyielded = 0
            await asyncio.sleep(0)

    def _receive(self) -> bool:
        """Reads one datagram into the pending events; False when none is waiting."""
        try:
            size, (pid, _groups) = self._sock.recvfrom_into(self._buf, 0, socket.MSG_TRUNC)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            self._pending.append(Resync("netlink socket overflowed (ENOBUFS)"))
            return True
        self._unyielded += 1
        if size > len(self._buf):
            self._pending.append(Resync(f"netlink datagram of {size} bytes truncated"))
        elif pid == 0:
            # Only the kernel (port 0) speaks for the kernel; privileged processes can
            # send to rtnetlink groups too.
            self._pending.extend(parse_datagram(bytes(self._buf[:size])))
        return True

    async def _readable(self) -> None:
        """Waits until the socket has data (or the monitor closes)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        waiter.get_loop().add_reader(self._sock.fileno(), self._wake)
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._stop_waiting()

    def _wake(self) -> None:
        """Reader callback: the socket has data."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _stop_waiting(self) -> None:
        """Unregisters the reader (before the socket closes) and releases the waiter."""
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            return
        waiter.get_loop().remove_reader(self._sock.fileno())
        if not waiter.done():
            waiter.set_result(None)
