"""What ecmpd learns from the kernel before planning: interfaces and foreign objects.

Read by `kernel.observe`, consumed by the pure config checks and `desired_state()`,
so neither of those ever touches the kernel themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network

from ecmpd.marks import MarkUse
from ecmpd.model import Family, IPAddress


@dataclass(frozen=True)
class InterfaceFacts:
    """One network interface as the kernel shows it."""

    name: str
    index: int
    up: bool = True
    carrier: bool = True
    pointopoint: bool = False
    addresses: tuple[IPv4Interface | IPv6Interface, ...] = ()
    # The gateway of this interface's default route in the main table, if any
    # (what a DHCP client installed); used for `gateway: dhcp`.
    dhcp_gateway: IPAddress | None = None
    dhcp_gateway6: IPAddress | None = None
    # A gateway of the main table's BGP default route on this interface (`gateway: bgp`).
    bgp_gateway: IPAddress | None = None
    bgp_gateway6: IPAddress | None = None

    @property
    def assumed(self) -> bool:
        """Made up from the config (an export without the kernel), not read: index 0."""
        return self.index == 0

    def reaches(self, gateway: IPAddress) -> bool:
        """Whether the gateway is on-link here: in one of its prefixes, link-local, or p2p."""
        # Point-to-point links have no broadcast domain: the peer is reachable whatever
        # its address (ecmpd marks their nexthops onlink).
        if self.pointopoint or gateway.is_link_local:
            return True
        return any(gateway in a.network for a in self.addresses if a.version == gateway.version)

    def networks(self, family: Family) -> list[IPv4Network | IPv6Network]:
        """The prefixes of its addresses of one family: its on-link neighbours'."""
        version = 4 if family is Family.INET else 6
        return [a.network for a in self.addresses if a.version == version]

    def primary(self, family: Family) -> IPv4Interface | IPv6Interface | None:
        """The first address of a family (link-local IPv6 skipped), as `ip` lists it."""
        for addr in self.addresses:
            if addr.version == (4 if family is Family.INET else 6) and not (
                addr.version == 6 and addr.ip.is_link_local
            ):
                return addr
        return None


@dataclass(frozen=True)
class MainDefault:
    """A default route in the main table that ecmpd did not create (read for `announce`)."""

    family: Family
    protocol: int
    metric: int
    gateway: IPAddress | None
    ifname: str | None


@dataclass(frozen=True)
class KernelFacts:
    """Everything the planner needs to know about the kernel, ecmpd's objects aside."""

    interfaces: dict[str, InterfaceFacts] = field(default_factory=dict)
    # (family, priority) of ip rules that ecmpd does not own.
    foreign_rule_priorities: frozenset[tuple[Family, int]] = frozenset()
    # Table ids holding routes that ecmpd did not create.
    foreign_tables: frozenset[int] = frozenset()
    # Nexthop ids of nexthop objects that ecmpd did not create.
    foreign_nexthop_ids: frozenset[int] = frozenset()
    # Addresses of MPTCP endpoints that ecmpd did not create, with their ids.
    foreign_mptcp_endpoints: Mapping[IPAddress, int] = field(default_factory=dict)
    # Interfaces whose root qdisc is someone else's: name -> its kind and handle ("tbf 1:").
    foreign_qdiscs: Mapping[str, str] = field(default_factory=dict)
    # Foreign ip rules and nftables rules that test or set mark bits (read for checks).
    foreign_mark_uses: tuple[MarkUse, ...] = ()
    # Each uplink's connection-mark slot as the run dir records it (name, slot).
    mark_slots: tuple[tuple[str, int], ...] = ()
    # Others' default routes in main that FRR's zebra ranks above an imported one (read
    # only to check a config with `announce`).
    main_defaults: tuple[MainDefault, ...] = ()
