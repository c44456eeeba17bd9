"""Probes that test one uplink by leaving through it, whatever the routing tables say.

`open_prober` gives one prober per uplink and family; `probe_round` asks it about all
of a round's targets at once. The scheduler feeds the results to `HealthTracker.on_round`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from ecmpd.config.units import parse_method
from ecmpd.health.icmp import IcmpProber
from ecmpd.health.probebase import ProbeCounters
from ecmpd.health.tcp import TcpProber
from ecmpd.model import Family, IPAddress

__all__ = ["ProbeCounters", "Prober", "open_prober", "probe_round"]


class Prober(Protocol):
    """Probes through one uplink in one address family."""

    @property
    def counters(self) -> ProbeCounters:
        """Running totals, for metrics."""
        ...

    async def probe(self, target: IPAddress, timeout: float) -> float | None:
        """The round-trip time in seconds to target, or None if the probe was lost."""
        ...

    async def aclose(self) -> None:
        """Release the prober's sockets; outstanding probes end as lost."""
        ...


async def open_prober(method: str, ifname: str, source: IPAddress | None, family: Family) -> Prober:
    """A prober for `icmp` or `tcp:PORT` through ifname; OSError if ifname or source is missing."""
    # Pass the uplink's source address: without it no `from <source>` rule steers the
    # probes, which then find no way out while the balanced route leaves the uplink
    # out (see bound_socket). Sockets live in the calling thread's network namespace;
    # an ICMP prober reads its socket on the running loop.
    method = parse_method(method)
    if method == "icmp":
        return IcmpProber.open(ifname, source, family)
    return TcpProber.open(int(method.removeprefix("tcp:")), ifname, source, family)


async def probe_round(
    prober: Prober, targets: Sequence[IPAddress], timeout: float
) -> dict[IPAddress, float | None]:
    """Probe all targets concurrently; each one's RTT in seconds, or None if lost."""
    async with asyncio.TaskGroup() as group:
        tasks = {t: group.create_task(prober.probe(t, timeout)) for t in dict.fromkeys(targets)}
    return {target: task.result() for target, task in tasks.items()}
