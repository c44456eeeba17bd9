"""The scale-out lab's LAN traffic, both families: what an edge's failure must not disturb.

From the LAN namespace, through the core and the edges (NAT there), to the internet:
- one 100 Hz ping stream per server (lab.pinggaps): an ICMP flow keeps its id, so a new
  path must carry the very same stream, as a UDP flow's;
- busy TCP "chat" connections (lab.chatpool: a line every 100 ms, echoed), which record
  every error, stall and reconnection, and the edge each went through (the NAT address
  the server saw);
- idle TCP connections (lab.idleconns), silent from start to stop, then asked for an
  echo: one through an edge that did not fail must still answer.
A connection is NATed by its edge, so one that changes edge breaks: a moved connection
is a broken one, as for real.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

from ecmpd.lab.chat import ChatServer
from ecmpd.lab.chatpool import ClientPool, Slot
from ecmpd.lab.edgefigures import IdleConn, Recorded
from ecmpd.lab.edgelayout import EdgeLab
from ecmpd.lab.idleconns import IdleConns
from ecmpd.lab.layout import round_robin
from ecmpd.lab.pinggaps import PingStreams
from ecmpd.lab.running import Running

IPAddress = IPv4Address | IPv6Address
BUSY = 32  # busy connections per family
IDLE = 64  # idle ones per family
READY_TIMEOUT_S = 15.0


def specs(
    clients: Sequence[IPAddress], servers: Sequence[IPAddress], n: int, offset: int = 0
) -> list[tuple[IPAddress, IPAddress, int]]:
    """n (client, server, ephemeral port) triples spread over clients and servers."""
    return [(client, server, 0) for client, server in round_robin(clients, servers, n, offset)]


class EdgeTraffic(Running):
    """Ping streams, busy and idle TCP connections from the LAN, IPv4 and IPv6."""

    def __init__(self, lab: EdgeLab, *, busy: int = BUSY, idle: int = IDLE) -> None:
        self.lab, self.busy, self.idle_n = lab, busy, idle
        self.public_edges = lab.public_edges()
        self._stack = contextlib.ExitStack()
        self.pings = PingStreams(lab.lan, [*lab.servers, *lab.servers6])
        self.pool: ClientPool | None = None
        self.idle: IdleConns | None = None
        self.recorded: Recorded | None = None
        self.clock_offset = time.time() - time.monotonic()

    def start(self) -> None:
        lab, stack = self.lab, self._stack
        stack.enter_context(ChatServer(lab.internet))
        stack.enter_context(ChatServer(lab.internet, family=socket.AF_INET6))
        busy = specs(lab.clients, lab.servers, self.busy)
        busy += specs(lab.clients6, lab.servers6, self.busy)
        self.pool = stack.enter_context(ClientPool(lab.lan, busy))
        self.idle = stack.enter_context(IdleConns(lab.lan))
        idle: list[tuple[IPAddress, IPAddress]] = [
            *round_robin(lab.clients, lab.servers, self.idle_n, 3),
            *round_robin(lab.clients6, lab.servers6, self.idle_n, 3),
        ]
        self.idle.open(idle)
        stack.enter_context(self.pings)
        self.pool.wait_ready(READY_TIMEOUT_S)

    def slots(self) -> list[Slot]:
        """The busy connections' slots now."""
        return self.pool.snapshot() if self.pool is not None else []

    def on_edge(self, edge: str, version: int | None = None) -> int:
        """How many busy connections are open through the edge now (of one IP version)."""
        return sum(
            1
            for s in self.slots()
            if s.public is not None
            and self.public_edges.get(s.public) == edge
            and version in (None, s.source.version)
        )

    def stop(self) -> Recorded:
        """Checks the idle connections, stops everything; what was recorded."""
        if self.recorded is not None:
            return self.recorded
        try:
            idle: list[IdleConn] = []
            if self.idle is not None:
                broken = {id(c) for c in self.idle.check()}
                idle = [
                    IdleConn(c.client.version, self.public_edges.get(c.public), id(c) not in broken)
                    for c in self.idle.conns
                ]
            slots = self.slots()
        finally:
            self._stack.close()
        self.recorded = Recorded(
            streams=tuple(self.pings.streams),
            slots=tuple(slots),
            idle=tuple(idle),
            public_edges=self.public_edges,
            clock_offset=self.clock_offset,
        )
        return self.recorded
