"""Pure: one uplink in one address family, resolved against the kernel facts."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface

from ecmpd.config import Config, UplinkConfig
from ecmpd.config.semantic import carries_ipv4, carries_ipv6
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.model import Family, IPAddress, nexthop_id
from ecmpd.order import OrderState, effective_tier

FAMILIES = (Family.INET, Family.INET6)


@dataclass(frozen=True)
class UplinkPlan:
    """One uplink in one address family, with everything resolved against the kernel facts."""

    name: str
    ifname: str
    table: int
    weight: int
    gateway: IPAddress | None
    source: IPv4Interface | IPv6Interface | None
    nexthop_id: int
    admin_up: bool  # the interface exists and is up: routes on it can exist
    usable: bool  # the interface exists, is up and has carrier: a nexthop can exist
    in_service: bool  # usable and healthy: may carry traffic
    family: Family = Family.INET
    tier: int = 1  # the failover tier, LAST_RESORT_TIER once over its data cap


def carries(uplink: UplinkConfig, family: Family) -> bool:
    """Whether the uplink routes this address family."""
    return carries_ipv6(uplink) if family is Family.INET6 else carries_ipv4(uplink)


def resolve_uplink(
    uplink: UplinkConfig,
    facts: KernelFacts,
    healthy: bool,
    family: Family = Family.INET,
    order: OrderState | None = None,
) -> UplinkPlan:
    """Resolve `dhcp`, the default source address and usability for one uplink and family.

    An uplink that does not carry the family resolves as unusable: nothing of it exists
    in that family.
    """
    iface = facts.interfaces.get(uplink.interface)
    gateway: IPAddress | None
    if family is Family.INET6:
        gateway6 = uplink.gateway6
        if gateway6 == "ra":
            gateway = iface.dhcp_gateway6 if iface else None
        elif gateway6 == "bgp":
            gateway = iface.bgp_gateway6 if iface else None
        else:
            gateway = gateway6
    elif uplink.gateway == "dhcp":
        gateway = iface.dhcp_gateway if iface else None
    elif uplink.gateway == "bgp":
        gateway = iface.bgp_gateway if iface else None
    else:
        gateway = uplink.gateway
    carried = carries(uplink, family)
    source = _source_interface(uplink, iface, family) if carried else None
    admin_up = (
        carried
        and iface is not None
        and iface.up
        and _unroutable(uplink, iface, family, gateway) is None
    )
    usable = (
        admin_up
        and iface is not None
        and iface.carrier
        and _conflict(uplink, facts, family) is None
    )
    return UplinkPlan(
        name=uplink.name,
        ifname=uplink.interface,
        table=uplink.table,
        weight=uplink.weight,
        gateway=gateway,
        source=source,
        nexthop_id=nexthop_id(uplink.table, family),
        admin_up=admin_up,
        usable=usable,
        in_service=usable and healthy,
        family=family,
        tier=effective_tier(uplink.name, uplink.tier, order or OrderState()),
    )


def unavailable(uplink: UplinkConfig, facts: KernelFacts, family: Family) -> str | None:
    """Why the uplink cannot carry this family now, whatever its health; None if it can.

    What the daemon shows as the uplink's reason while it holds it down (no probing,
    nothing of it in the kernel), until the interface, lease or router appears.
    """
    iface = facts.interfaces.get(uplink.interface)
    if iface is None:
        return "no interface"
    gateway = resolve_uplink(uplink, facts, True, family).gateway
    return _unroutable(uplink, iface, family, gateway) or _conflict(uplink, facts, family)


def _unroutable(
    uplink: UplinkConfig, iface: InterfaceFacts, family: Family, gateway: IPAddress | None
) -> str | None:
    """Why no route can go out of the uplink in this family (None: they can)."""
    # A `dhcp` uplink without a lease (an `ra` one without a router, a `bgp` one without
    # a route) has nowhere to send traffic yet, and must not look like a point-to-point
    # link with a gateway-less route.
    if family is Family.INET and uplink.gateway == "dhcp" and gateway is None:
        return "no DHCP lease yet"
    if family is Family.INET6 and uplink.gateway6 == "ra" and gateway is None:
        return "no router advertisement yet"
    bgp = uplink.gateway == "bgp" if family is Family.INET else uplink.gateway6 == "bgp"
    if bgp and gateway is None:
        return "no BGP route yet"
    # A gateway off the interface's prefixes (its address went, a new lease is in
    # another subnet) cannot be routed to: the kernel would refuse its nexthop and
    # routes, and that one refusal would hold up every other change of the reconcile.
    if gateway is not None and not iface.assumed and not iface.reaches(gateway):
        return f"gateway {gateway} is not on a prefix of {iface.name}"
    return None


def _conflict(uplink: UplinkConfig, facts: KernelFacts, family: Family) -> str | None:
    """A foreign nexthop holding the uplink's nexthop id: never put it in ecmpd's group.

    (FRR's zebra can take an id while the kernel has flushed ecmpd's nexthop with a
    carrier loss; ecmpd's add then fails with EEXIST.)
    """
    nhid = nexthop_id(uplink.table, family)
    if nhid in facts.foreign_nexthop_ids:
        return f"conflict: nexthop id {nhid} is held by a foreign nexthop"
    return None


def _source_interface(
    uplink: UplinkConfig, iface: InterfaceFacts | None, family: Family
) -> IPv4Interface | IPv6Interface | None:
    """The uplink's source address with its prefix (from the interface when known)."""
    wanted = uplink.source6 if family is Family.INET6 else uplink.source
    if wanted is None:
        return iface.primary(family) if iface else None
    if iface is not None:
        for addr in iface.addresses:
            if addr.ip == wanted:
                return addr
    return IPv6Interface(wanted) if family is Family.INET6 else IPv4Interface(wanted)


def has_ipv6(config: Config) -> bool:
    """Whether any uplink carries IPv6 (and so ecmpd sets up IPv6 at all)."""
    return any(carries_ipv6(u) for u in config.uplinks)
