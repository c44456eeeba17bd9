"""ICMP and ICMPv6 echo probes through one uplink, on one raw socket per uplink and family.

A raw socket, not a ping socket (SOCK_DGRAM, IPPROTO_ICMP): ping sockets are off
unless net.ipv4.ping_group_range admits the caller (its default "1 0" admits no one,
in every new namespace too), and there the kernel picks the echo id and hides
replies with other ids, which leaves nothing to count as mismatched. The daemon runs
with CAP_NET_RAW anyway (it needs CAP_NET_ADMIN). A raw socket's cost, a copy of
every ICMP packet, is bounded by the kernel: it delivers only echo replies (the
ICMP filter) that arrived on the bound device for the bound address.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from ecmpd.health.packets import ICMP_ECHO_REPLY, ICMPV6_ECHO_REPLY, build_echo, parse_echo_reply
from ecmpd.health.probebase import ProbeCounters, bound_socket, check_family, sockaddr
from ecmpd.model import Family, IPAddress

# linux/icmp.h and linux/icmpv6.h; Python's socket module has neither.
SOL_RAW: Final = 255
ICMP_FILTER: Final = 1
ICMPV6_FILTER: Final = 1

_RECV_SIZE: Final = 2048  # an echo reply to our probes is 44 bytes; longer ones are not ours
_READ_BATCH: Final = 64  # datagrams per wake-up, so a flood cannot starve the loop
# Timed-out sequence numbers kept to tell a late answer from a stray one: far more
# than a prober has in flight within any plausible timeout (20 probes/s x 60 s).
_EXPIRED_KEPT: Final = 1024


@dataclass(slots=True)
class _Pending:
    """A probe waiting for its echo reply."""

    target: bytes  # packed: compared with each reply's source at C speed
    future: asyncio.Future[float | None]
    sent_at: float


class IcmpProber:
    """Echo probes through one uplink; a reply counts only with our id, its sequence and source."""

    def __init__(self, sock: socket.socket, family: Family, ifname: str) -> None:
        self.counters = ProbeCounters()
        self.ident: Final = secrets.randbits(16)  # unguessable: off-path spoofers must match it
        self._sock = sock
        self._family = family
        self._ifname = ifname
        self._sequence = secrets.randbits(16)
        self._pending: dict[int, _Pending] = {}
        self._expired: OrderedDict[int, bytes] = OrderedDict()  # sequence -> packed target
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    def open(cls, ifname: str, source: IPAddress | None, family: Family) -> IcmpProber:
        """A prober on a new raw socket bound to ifname (and source); needs a running loop."""
        proto = socket.IPPROTO_ICMP if family is Family.INET else socket.IPPROTO_ICMPV6
        prepare = _only_echo_replies_v4 if family is Family.INET else _only_echo_replies_v6
        sock = bound_socket(family, socket.SOCK_RAW, proto, ifname, source, prepare=prepare)
        try:
            return cls(sock, family, ifname)
        except BaseException:
            sock.close()
            raise

    @property
    def sequence(self) -> int:
        """The sequence number of the latest probe sent."""
        return self._sequence

    async def probe(self, target: IPAddress, timeout: float) -> float | None:
        """The round-trip time in seconds of one echo to target, or None if lost."""
        check_family(self._family, target)
        if self._closed:
            raise RuntimeError("probe on a closed prober")
        sequence = self._next_sequence()
        future: asyncio.Future[float | None] = self._loop.create_future()
        pending = _Pending(target.packed, future, time.monotonic())
        self._pending[sequence] = pending
        try:
            try:
                self._sock.sendto(
                    build_echo(self._family, self.ident, sequence),
                    sockaddr(target, 0, self._ifname),
                )
            except OSError:  # no route, source address gone, device down, queue full
                self.counters.errors += 1
                return None
            self.counters.sent += 1
            try:
                async with asyncio.timeout(timeout):
                    return await future
            except TimeoutError:
                if future.done() and not future.cancelled():
                    return future.result()  # answered in the loop turn the deadline fired
                self._remember_expired(sequence, pending.target)
                return None
        finally:
            if self._pending.get(sequence) is pending:
                del self._pending[sequence]

    async def aclose(self) -> None:
        """Stop reading, settle outstanding probes as lost and close the socket (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_result(None)
        self._pending.clear()
        self._sock.close()

    def _next_sequence(self) -> int:
        """The next sequence number not in flight (16 bits, wrapping)."""
        for _ in range(0x10000):
            self._sequence = (self._sequence + 1) & 0xFFFF
            if self._sequence not in self._pending:
                self._expired.pop(self._sequence, None)  # reused: an old answer is now stray
                return self._sequence
        raise RuntimeError("65536 probes in flight on one prober")

    def _remember_expired(self, sequence: int, target: bytes) -> None:
        """Keep a timed-out probe's sequence, to count its answer as late."""
        self._expired[sequence] = target
        while len(self._expired) > _EXPIRED_KEPT:
            self._expired.popitem(last=False)

    def _on_readable(self) -> None:
        """Read what arrived and settle the probes it answers."""
        for _ in range(_READ_BATCH):
            try:
                data, address = self._sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # A pending socket error is reported once; the next read carries on.
                return
            self._dispatch(data, address[0], time.monotonic())

    def _dispatch(self, data: bytes, address: str, now: float) -> None:
        """Settle the probe this datagram answers, or count it as late or mismatched."""
        echo = parse_echo_reply(self._family, data)
        if echo is None or echo.ident != self.ident:
            self.counters.mismatched += 1
            return
        try:  # IPv6 link-local sources come scoped: fe80::1%wan-a
            source = socket.inet_pton(self._family, address.partition("%")[0])
        except OSError:
            self.counters.mismatched += 1
            return
        pending = self._pending.get(echo.sequence)
        if pending is not None and pending.target == source:
            del self._pending[echo.sequence]
            if not pending.future.done():  # done: cancelled with its probe
                pending.future.set_result(now - pending.sent_at)
                self.counters.received += 1
            return
        if self._expired.get(echo.sequence) == source:
            del self._expired[echo.sequence]
            self.counters.late += 1
            return
        # Wrong source for the sequence, a sequence never sent, or a duplicate answer.
        self.counters.mismatched += 1


def _only_echo_replies_v4(sock: socket.socket) -> None:
    """Have the kernel deliver only echo replies to the raw ICMP socket."""
    blocked = ~(1 << ICMP_ECHO_REPLY) & 0xFFFFFFFF  # a set bit blocks that type
    sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", blocked))


def _only_echo_replies_v6(sock: socket.socket) -> None:
    """Have the kernel deliver only echo replies to the raw ICMPv6 socket."""
    words = [0xFFFFFFFF] * 8  # struct icmp6_filter: 256 bits, a set bit blocks that type
    words[ICMPV6_ECHO_REPLY >> 5] &= ~(1 << (ICMPV6_ECHO_REPLY & 31)) & 0xFFFFFFFF
    sock.setsockopt(socket.IPPROTO_ICMPV6, ICMPV6_FILTER, struct.pack("=8I", *words))
