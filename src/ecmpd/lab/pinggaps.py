"""Outages as LAN traffic sees them: one fast ping stream per server, the longest gap.

IPv4 or IPv6 servers alike (ping picks the family from the address).

`ping -D -i 0.01` from the LAN namespace to each server: every reply carries its
receive time, so a path that breaks and comes back (through another router) shows as
the longest gap between consecutive replies after a fault. ICMP, not a TCP connection:
a new path must carry the very same stream (NAT at the edge maps it anew), which is
what a UDP or a new TCP flow sees too.
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from ecmpd.lab import netns
from ecmpd.lab.running import Running

INTERVAL_S = 0.01
_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from ([\da-f.:]+): icmp_seq=(\d+)")


@dataclass(frozen=True)
class Stream:
    """One server's replies: receive times (wall clock, as ping -D prints them)."""

    server: IPv4Address | IPv6Address
    replies: tuple[float, ...]

    def gap_after(self, t: float) -> float:
        """The longest silence from t on: to the first reply after t, or between two."""
        return max(self.gaps_after(t))

    def gaps_after(self, t: float) -> list[float]:
        """Every silence from t on: to the first reply after t, then between replies."""
        times = [r for r in self.replies if r >= t]
        if not times:
            return [float("inf")]
        return [times[0] - t] + [b - a for a, b in itertools.pairwise(times)]


class PingStreams(Running):
    """Ping every server from `ns` at INTERVAL_S until stopped."""

    def __init__(self, ns: str, servers: Sequence[IPv4Address | IPv6Address]) -> None:
        self.ns, self.servers = ns, list(servers)
        self.procs: list[subprocess.Popen[str]] = []
        self.streams: list[Stream] = []

    def start(self) -> None:
        for server in self.servers:
            argv = ["ping", "-D", "-n", "-i", str(INTERVAL_S), "-W", "1", str(server)]
            out, err = subprocess.PIPE, subprocess.DEVNULL
            self.procs.append(netns.popen_in(self.ns, argv, stdout=out, stderr=err, text=True))

    def stop(self) -> list[Stream]:
        """Stops the pings; each server's replies."""
        if not self.procs:
            return self.streams
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for server, proc in zip(self.servers, self.procs, strict=True):
            out, _ = proc.communicate(timeout=10)
            replies = [float(m.group(1)) for line in out.splitlines() if (m := _REPLY.match(line))]
            self.streams.append(Stream(server, tuple(replies)))
        self.procs = []
        return self.streams
