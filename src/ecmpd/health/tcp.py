"""TCP connect probes through one uplink (method `tcp:PORT`), for targets that drop ICMP.

An answered SYN proves the path, so a RST (connection refused) counts as reachable,
like a SYN-ACK: the daemon judges the uplink, not the service, and a restarting
server must not flap it. The limit of that choice: the kernel reports an ICMP port
unreachable as ECONNREFUSED too, so a firewall rejecting that way on the path also
reads as reachable; choose a target and port nothing in between rejects.
Unanswered SYNs (and soft ICMP errors such as host unreachable) are lost at the timeout.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time

from ecmpd.health.probebase import ProbeCounters, bound_socket, check_family, sockaddr
from ecmpd.model import Family, IPAddress


class TcpProber:
    """Connect probes to one port through one uplink; SYN-ACK or RST is an answer."""

    def __init__(self, port: int, ifname: str, source: IPAddress | None, family: Family) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"tcp port {port} is outside 1..65535")
        self.counters = ProbeCounters()
        self.port = port
        self._ifname = ifname
        self._source = source
        self._family = family
        self._closed = False

    @classmethod
    def open(cls, port: int, ifname: str, source: IPAddress | None, family: Family) -> TcpProber:
        """A prober; a trial socket makes a missing device or address fail here, not later."""
        prober = cls(port, ifname, source, family)
        prober._socket().close()
        return prober

    async def probe(self, target: IPAddress, timeout: float) -> float | None:
        """The time in seconds until target answered a SYN, or None if it did not."""
        check_family(self._family, target)
        if self._closed:
            raise RuntimeError("probe on a closed prober")
        try:
            sock = self._socket()
        except OSError:  # the device or source address is gone
            self.counters.errors += 1
            return None
        with sock:
            started = time.monotonic()
            error = sock.connect_ex(sockaddr(target, self.port, self._ifname))
            if error not in (0, errno.EINPROGRESS, errno.ECONNREFUSED):
                self.counters.errors += 1  # refused locally, no SYN left: no route, no address
                return None
            self.counters.sent += 1
            if error == errno.EINPROGRESS:
                if not await _writable(sock, timeout):
                    return None
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            rtt = time.monotonic() - started
        if error == errno.ECONNREFUSED:
            self.counters.refused += 1
        elif error != 0:  # a hard ICMP error (protocol or port unreachable) or a local one
            self.counters.errors += 1
            return None
        self.counters.received += 1
        return rtt

    async def aclose(self) -> None:
        """Refuse further probes (each probe closes its own socket)."""
        self._closed = True

    def _socket(self) -> socket.socket:
        """A fresh socket for one connect through the uplink."""
        return bound_socket(
            self._family,
            socket.SOCK_STREAM,
            socket.IPPROTO_TCP,
            self._ifname,
            self._source,
            prepare=_reset_on_close,
            defer_port=True,
        )


async def _writable(sock: socket.socket, timeout: float) -> bool:
    """Whether a connecting socket settled (connected or failed) within timeout."""
    loop = asyncio.get_running_loop()
    settled: asyncio.Future[None] = loop.create_future()
    loop.add_writer(sock.fileno(), _settle, settled)
    try:
        async with asyncio.timeout(timeout):
            await settled
    except TimeoutError:
        # Settled in the loop turn the deadline fired: the answer was in time.
        return settled.done() and not settled.cancelled()
    finally:
        loop.remove_writer(sock.fileno())
    return True


def _settle(future: asyncio.Future[None]) -> None:
    """Mark the connect as settled (the writer may fire again before it is removed)."""
    if not future.done():
        future.set_result(None)


def _reset_on_close(sock: socket.socket) -> None:
    """Make close() send a RST: no FIN exchange, no TIME_WAIT left per probe."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
