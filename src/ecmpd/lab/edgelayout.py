"""The scale-out lab's layout, planned without touching the system (lab.edges builds it).

LAN -> core -> switch -> edge 1..N -> 2 ISPs each -> internet, for N = 1..4:
  lan eth0 10.200.0.2/16, 2001:db8:200::2/64 (+ clients 10.200.1.1.., 2001:db8:200::100..)
      <->  core lan0 10.200.0.1/16, 2001:db8:200::1/64
  core core-eK 10.0.K.2/24, fd00:0:0:K::2/64  <->  [bridge brK in the switch]  <->
      edge K core0 10.0.K.1/24, fd00:0:0:K::1/64 (the switch keeps the core's carrier
      up when an edge dies, as a real switch does: only BFD, probes or BGP notice)
  edge K wan-X 10.<i+1>.0.2/24, 2001:db8:<i+1>::2/64  <->  ISP i cust0 .1 (ISPs a, b for
      edge 1, c, d for edge 2, ...), ISP core0 172.16.<i+1>.1/30 <-> internet isp-X .2
  internet lo: 198.51.100.1..S/32, 2001:db8:100::1..S/128 (the probe targets, servers)
Each edge runs ecmpd (router mode, NAT on its uplinks, `announce` table 150, ::/0 in
main for FRR 8.4) and FRR (AS 65000+K) peering with the core (AS 65000) over both
families, BFD 100 ms x 3; the FRR configs are `ecmpd export --format frr`'s. The core
runs FRR (maximum-paths N) and, unless left out, ecmpd with the edges as uplinks
(`gateway: bgp`, probed through each edge to the internet in both families, no NAT).
The LAN's IPv6 leaves an edge translated to that edge's address (the lab's own NAT66
table on the edge, as sites with provider-assigned prefixes do with NPTv6/NAT66: ecmpd
does no NAT66), so a flow that changes edge breaks as a NATed IPv4 flow does.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

from ecmpd.lab.layout import (
    FIRST_LAN_CLIENT,
    LAN_HOST,
    LAN_HOST6,
    LAN_PREFIX,
    LAN_PREFIX6,
    LAN_ROUTER,
    LAN_ROUTER6,
    core_link,
    isp_name,
    uplink_if,
)

MAX_EDGES = 4
ISPS_PER_EDGE = 2
CORE_ASN = 65000
ANNOUNCE_TABLE = 150
EDGE_CORE_IF = "core0"  # edge side of the core link
LAN_IF, CORE_LAN_IF = "eth0", "lan0"
BFD = "100x3"
LAN_CLIENTS = 16  # addresses per family on the LAN host, for connections from many sources
FIRST_LAN_CLIENT6 = LAN_HOST6.ip + 0x100


@dataclass(frozen=True)
class EdgeIsp:
    """One ISP of an edge."""

    name: str  # isp-a ..
    ns: str
    uplink_if: str  # the edge's interface towards it (wan-a ..)
    index: int  # 0-based over the whole lab: addresses 10.<index+1>.0.0/24
    gateway: IPv4Address
    address: IPv4Interface
    gateway6: IPv6Address
    address6: IPv6Interface
    core: IPv4Interface  # ISP side of its link to the internet
    peer: IPv4Interface  # internet side


@dataclass(frozen=True)
class Edge:
    """One edge router: its namespace, link to the core, ISPs, BGP identity."""

    name: str  # edge1 ..
    ns: str
    asn: int
    core_if: str  # the core's interface towards it (core-e1 ..)
    address: IPv4Interface  # edge side of the core link
    core_address: IPv4Interface  # core side
    address6: IPv6Interface
    core_address6: IPv6Interface
    isps: tuple[EdgeIsp, ...]


@dataclass(frozen=True)
class EdgeLab:
    """The whole scale-out lab."""

    prefix: str
    lan: str
    core: str
    switch: str
    internet: str
    edges: tuple[Edge, ...]
    servers: tuple[IPv4Address, ...]
    servers6: tuple[IPv6Address, ...]
    workdir: Path
    clients: tuple[IPv4Address, ...] = ()  # the LAN host's extra addresses
    clients6: tuple[IPv6Address, ...] = ()

    def namespaces(self) -> list[str]:
        """Every namespace, in build order."""
        return [
            self.lan,
            self.core,
            self.switch,
            self.internet,
            *(e.ns for e in self.edges),
            *(i.ns for e in self.edges for i in e.isps),
        ]

    @property
    def router(self) -> str:
        """The namespace whose balancer the LAN uses: the core's."""
        return self.core

    def uplink_names(self) -> list[str]:
        """The core's uplinks (the edges) in config order."""
        return [e.name for e in self.edges]

    def edge(self, name: str) -> Edge:
        """The edge with this name."""
        return next(e for e in self.edges if e.name == name)

    def public_edges(self) -> dict[str, str]:
        """The address a server sees for each edge's ISPs (its NAT source) -> the edge."""
        return {
            str(address.ip): edge.name
            for edge in self.edges
            for isp in edge.isps
            for address in (isp.address, isp.address6)
        }


def plan_edge_lab(edges: int, prefix: str, workdir: Path, servers: int = 8) -> EdgeLab:
    """The EdgeLab that lab.edges would build."""
    if not 1 <= edges <= MAX_EDGES:
        raise ValueError(f"edges must be 1..{MAX_EDGES}, got {edges}")
    planned = []
    for k in range(1, edges + 1):
        isps = []
        for j in range(ISPS_PER_EDGE):
            i = (k - 1) * ISPS_PER_EDGE + j
            isp_side, inet_side = core_link(i)
            isps.append(
                EdgeIsp(
                    name=isp_name(i),
                    ns=f"{prefix}{isp_name(i)}",
                    uplink_if=uplink_if(i),
                    index=i,
                    gateway=IPv4Address(f"10.{i + 1}.0.1"),
                    address=IPv4Interface(f"10.{i + 1}.0.2/24"),
                    gateway6=IPv6Address(f"2001:db8:{i + 1}::1"),
                    address6=IPv6Interface(f"2001:db8:{i + 1}::2/64"),
                    core=isp_side,
                    peer=inet_side,
                )
            )
        planned.append(
            Edge(
                name=f"edge{k}",
                ns=f"{prefix}edge{k}",
                asn=CORE_ASN + k,
                core_if=f"core-e{k}",
                address=IPv4Interface(f"10.0.{k}.1/24"),
                core_address=IPv4Interface(f"10.0.{k}.2/24"),
                address6=IPv6Interface(f"fd00:0:0:{k}::1/64"),
                core_address6=IPv6Interface(f"fd00:0:0:{k}::2/64"),
                isps=tuple(isps),
            )
        )
    return EdgeLab(
        prefix=prefix,
        lan=f"{prefix}lan",
        core=f"{prefix}core",
        switch=f"{prefix}switch",
        internet=f"{prefix}internet",
        edges=tuple(planned),
        servers=tuple(IPv4Address(f"198.51.100.{n}") for n in range(1, servers + 1)),
        servers6=tuple(IPv6Address(f"2001:db8:100::{n:x}") for n in range(1, servers + 1)),
        workdir=workdir,
        clients=tuple(FIRST_LAN_CLIENT + k for k in range(LAN_CLIENTS)),
        clients6=tuple(FIRST_LAN_CLIENT6 + k for k in range(LAN_CLIENTS)),
    )


def edge_config(lab: EdgeLab, edge: Edge, check: dict[str, Any] | None = None) -> dict[str, Any]:
    """An edge's ecmpd config: its ISPs, NAT, the announce route for FRR."""
    targets = [str(lab.servers[0])]
    targets6 = [str(lab.servers6[0])]
    return {
        "mode": "router",
        "uplinks": [
            {
                "name": isp.name,
                "interface": isp.uplink_if,
                "gateway": str(isp.gateway),
                "gateway6": str(isp.gateway6),
                "check": {"targets": [str(isp.gateway), *targets, *targets6], **(check or {})},
            }
            for isp in edge.isps
        ],
        "balancer": {"when_all_down": "keep"},
        "announce": {"table": ANNOUNCE_TABLE, "table6": "main"},
    }


def core_config(lab: EdgeLab, check: dict[str, Any] | None = None) -> dict[str, Any]:
    """The core's ecmpd config: each edge an uplink, its gateway from BGP, probed beyond it."""
    return {
        "mode": "router",
        "uplinks": [
            {
                "name": edge.name,
                "interface": edge.core_if,
                "gateway": "bgp",
                "gateway6": "bgp",
                "nat": False,
                "check": {
                    "targets": [str(s) for s in (*lab.servers[:2], *lab.servers6[:2])],
                    **(check or {}),
                },
            }
            for edge in lab.edges
        ],
        # No edge announces, none forwards: the LAN falls back to main (BGP's view).
        "balancer": {"when_all_down": "main"},
    }


LAN = (LAN_HOST, LAN_ROUTER, LAN_PREFIX)
LAN6 = (LAN_HOST6, LAN_ROUTER6, LAN_PREFIX6)
