"""Pure: the MPTCP endpoints and path-manager limits ecmpd wants (part of desired_state).

One `subflow` endpoint per uplink and family in service, on the uplink's source address
and bound to its device: the kernel opens a subflow from it on every MPTCP connection,
and the uplink's reply rule (`from <source> lookup <its table>`) routes the subflow out
of that uplink. An uplink that leaves service loses its endpoint (the kernel closes its
subflows; the connection carries on over the others); when it returns, the endpoint is
added again, which is what makes the kernel open a subflow on the existing connections
(it does not retry by itself: mptcp_net-next#440). A degraded uplink keeps its endpoint
as `backup`: its subflows stay open but carry data only when nothing else works. So
does a `metered` uplink, and one of a tier above the one carrying traffic (standby):
a connection keeps a subflow ready there without sending over it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from ipaddress import IPv4Interface, IPv6Interface
from typing import Protocol

from ecmpd.config import Config
from ecmpd.config.semantic import carries_ipv4, carries_ipv6
from ecmpd.facts import KernelFacts
from ecmpd.model import MPTCP_MAX_SUBFLOWS, Family, MptcpEndpoint, MptcpLimits, Sysctl
from ecmpd.order import Member, carrying_tier

# (uplink name, family) pairs the health trackers call degraded.
Degraded = Collection[tuple[str, Family]]


class ResolvedUplink(Member, Protocol):
    """An uplink in one family as desired_state resolved it (what it reads of UplinkPlan)."""

    @property
    def ifname(self) -> str: ...
    @property
    def source(self) -> IPv4Interface | IPv6Interface | None: ...


def subflow_limit(config: Config) -> int:
    """Subflows per connection: one per MPTCP uplink (of the family with most), at most 8.

    Not one less, although the first subflow is not opened from an endpoint: the kernel
    keeps counting the first subflow after its uplink's endpoint was deleted, and with
    one too few the returning uplink's subflow is refused (measured on 6.18).
    """
    uplinks = config.mptcp_uplinks()
    v4 = sum(1 for u in uplinks if carries_ipv4(u))
    v6 = sum(1 for u in uplinks if carries_ipv6(u))
    return min(MPTCP_MAX_SUBFLOWS, max(v4, v6))


def mptcp_state(
    config: Config,
    by_family: Mapping[Family, Sequence[ResolvedUplink]],
    facts: KernelFacts,
    degraded: Degraded = (),
) -> tuple[set[MptcpEndpoint], set[MptcpLimits], set[Sysctl]]:
    """Endpoints, the limits and the enabling sysctl; nothing without an MPTCP uplink.

    An address already holding a foreign endpoint gets none of ecmpd's (the kernel
    allows one endpoint per address; the config check reports the conflict).
    """
    wanted = {u.name: u for u in config.mptcp_uplinks()}
    if not wanted:
        return set(), set(), set()
    endpoints = set()
    for family, plans in by_family.items():
        carrying = carrying_tier(plans)
        for u in plans:
            if u.name not in wanted or not u.in_service or u.source is None:
                continue
            address = u.source.ip
            if address.is_link_local or address in facts.foreign_mptcp_endpoints:
                continue
            standby = carrying is not None and u.tier > carrying
            backup = (u.name, family) in degraded or wanted[u.name].metered or standby
            endpoints.add(MptcpEndpoint(address=address, ifname=u.ifname, backup=backup))
    limits = {MptcpLimits(subflows=subflow_limit(config))}
    # Per namespace, on by default; an MPTCP socket cannot even be created with it off.
    return endpoints, limits, {Sysctl("net.mptcp.enabled", "1")}
