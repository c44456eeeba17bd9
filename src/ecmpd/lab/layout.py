"""The lab's layout: its namespaces, interfaces and addresses, planned without touching
the system (lab.topology makes them real).

Addressing plan, for ISP number i (0-based, names isp-a .. isp-h):
  router wan-X 10.<i+1>.0.2/24  <->  ISP cust0 10.<i+1>.0.1/24 (the gateway)
  ISP core0 172.16.<i+1>.1/30   <->  internet isp-X 172.16.<i+1>.2/30
  internet lo: 198.51.100.1..N/32 (servers) and 203.0.113.1..N/32 (alt_servers)
  router lan0 10.200.0.1/16     <->  lan eth0 10.200.0.2/16 (+ clients 10.200.1.1..)
and IPv6 from the documentation prefix 2001:db8::/32 (unless built with ipv6=False):
  router wan-X 2001:db8:<i+1>::2/64  <->  ISP cust0 2001:db8:<i+1>::1/64 and fe80::1/64
  ISP core0 2001:db8:ff<i+1>::1/64   <->  internet isp-X 2001:db8:ff<i+1>::2/64
  internet lo: 2001:db8:100::1..N/128 (servers6)
  router lan0 2001:db8:200::1/64     <->  lan eth0 2001:db8:200::2/64
ISPs do not NAT: the internet routes each 10.<i+1>.0.0/24 (and 2001:db8:<i+1>::/64)
back through ISP i, so a reply returns through the ISP its request used. The LAN's
prefixes come back through ISP a (its 2001:db8:200::/64 is ISP a's delegated prefix).
Duplicate address detection is off in an IPv6 lab's namespaces: addresses work at once.
The lab's own ecmpd config (lab_config) stays IPv4-only unless asked for IPv6.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from pathlib import Path
from typing import Any, TypeVar

from ecmpd.config.resolve import weights_from_bandwidths
from ecmpd.lab import netns
from ecmpd.lab.shaping import tbf_for
from ecmpd.model import MAX_WEIGHT

MAX_ISPS = 8
MAX_SERVERS = 254
ISP_CUSTOMER_IF = "cust0"  # ISP side of the router <-> ISP link
ISP_CORE_IF = "core0"  # ISP side of the ISP <-> internet link
# The servers live on the internet namespace's loopback: kernels built without
# the dummy driver (this lab's VM is one) still have lo.
SERVER_IF = "lo"
ROUTER_LAN_IF = "lan0"
LAN_IF = "eth0"
LAN_PREFIX = IPv4Network("10.200.0.0/16")
LAN_ROUTER = IPv4Interface("10.200.0.1/16")
LAN_HOST = IPv4Interface("10.200.0.2/16")
FIRST_LAN_CLIENT = IPv4Address("10.200.1.1")
LAN_PREFIX6 = IPv6Network("2001:db8:200::/64")
LAN_ROUTER6 = IPv6Interface("2001:db8:200::1/64")
LAN_HOST6 = IPv6Interface("2001:db8:200::2/64")
# Every ISP's customer port also answers on this link-local address, so a config can
# name the gateway as routers often do (`gateway6: fe80::1`, which needs the device).
LINK_LOCAL_GATEWAY6 = IPv6Interface("fe80::1/64")
# ifindexes of the veth ends the lab creates itself (see _veth for why).
UPLINK_IFINDEX = 101  # router wan-a; wan-b is 102, ...
LAN_IFINDEX = 150  # router lan0
CORE_IFINDEX = 200  # ISP core0
STATE_FILE = "lab.json"
CONFIG_FILE = "ecmpd.yaml"

C = TypeVar("C")
S = TypeVar("S")


def round_robin(
    clients: Sequence[C], servers: Sequence[S], n: int, offset: int = 0
) -> list[tuple[C, S]]:
    """n (client, server) pairs, the k-th from both lists in turn, starting at offset."""
    return [
        (clients[(offset + k) % len(clients)], servers[(offset + k) % len(servers)])
        for k in range(n)
    ]


@dataclass(frozen=True)
class IspInfo:
    """One ISP of the lab, as seen from the router."""

    name: str
    ns: str
    uplink_if: str
    gateway: IPv4Address
    address: IPv4Interface
    rate_mbit: int
    weight: int
    gateway6: IPv6Address | None = None  # None in a lab built without IPv6
    address6: IPv6Interface | None = None


@dataclass
class Lab:
    """A lab's namespaces and addresses; build_lab makes it real, destroy_lab removes it."""

    prefix: str
    router: str
    internet: str
    lan: str | None
    isps: list[IspInfo]
    servers: list[IPv4Address]
    workdir: Path
    config_path: Path
    alt_servers: list[IPv4Address] = field(default_factory=list)
    lan_clients: list[IPv4Address] = field(default_factory=list)
    servers6: list[IPv6Address] = field(default_factory=list)  # empty without IPv6

    @property
    def ipv6(self) -> bool:
        """Whether the lab has IPv6 addressing."""
        return bool(self.servers6)

    def ns(self, role: str) -> str:
        """Returns the namespace of 'router', 'internet', 'lan' or an ISP name."""
        if role == "router":
            return self.router
        if role == "internet":
            return self.internet
        if role == "lan" and self.lan is not None:
            return self.lan
        for isp in self.isps:
            if isp.name == role:
                return isp.ns
        raise KeyError(f"lab {self.prefix!r} has no namespace for role {role!r}")

    def namespaces(self) -> list[str]:
        """Returns all the lab's namespaces, in creation order."""
        names = [self.router, self.internet, *(isp.ns for isp in self.isps)]
        return [*names, self.lan] if self.lan is not None else names

    def uplink_names(self) -> list[str]:
        """The router's uplinks (its ISPs) in config order."""
        return [isp.name for isp in self.isps]

    def pairs(self, n: int, offset: int = 0) -> list[tuple[IPv4Address, IPv4Address]]:
        """n (LAN client, server) pairs, spread over the clients and the servers."""
        return round_robin(self.lan_clients, self.servers, n, offset)

    def isp(self, name: str) -> IspInfo:
        """Returns the ISP called name."""
        for isp in self.isps:
            if isp.name == name:
                return isp
        raise KeyError(f"lab {self.prefix!r} has no ISP {name!r}")


def isp_name(i: int) -> str:
    """Returns the name of ISP number i (0 -> 'isp-a')."""
    return f"isp-{chr(ord('a') + i)}"


def uplink_if(i: int) -> str:
    """Returns the router interface towards ISP number i (0 -> 'wan-a')."""
    return f"wan-{chr(ord('a') + i)}"


def core_link(i: int) -> tuple[IPv4Interface, IPv4Interface]:
    """Returns the (ISP side, internet side) addresses of ISP i's link to the internet."""
    return IPv4Interface(f"172.16.{i + 1}.1/30"), IPv4Interface(f"172.16.{i + 1}.2/30")


def customer_prefix(i: int) -> IPv4Network:
    """Returns the prefix ISP number i gives the router."""
    return IPv4Network(f"10.{i + 1}.0.0/24")


def core_link6(i: int) -> tuple[IPv6Interface, IPv6Interface]:
    """Returns the IPv6 (ISP side, internet side) addresses of ISP i's link to the internet."""
    return IPv6Interface(f"2001:db8:ff{i + 1}::1/64"), IPv6Interface(f"2001:db8:ff{i + 1}::2/64")


def customer_prefix6(i: int) -> IPv6Network:
    """Returns the IPv6 prefix of ISP number i's link to the router."""
    return IPv6Network(f"2001:db8:{i + 1}::/64")


def plan_lab(
    *,
    isps: int = 3,
    rates_mbit: Sequence[int] = (100, 200, 50),
    weights: Sequence[int] | None = None,
    lan: bool = False,
    servers: int = 16,
    workdir: Path,
    prefix: str | None = None,
    ipv6: bool = True,
) -> Lab:
    """Returns the Lab build_lab would build, without touching the system."""
    if not 1 <= isps <= MAX_ISPS:
        raise ValueError(f"isps must be 1..{MAX_ISPS}, got {isps}")
    if not 1 <= servers <= MAX_SERVERS:
        raise ValueError(f"servers must be 1..{MAX_SERVERS}, got {servers}")
    if not rates_mbit:
        raise ValueError("rates_mbit must not be empty")
    # Shorter rate lists repeat, so the default (100, 200, 50) serves up to 8 ISPs.
    rates = [rates_mbit[i % len(rates_mbit)] for i in range(isps)]
    for rate in rates:
        tbf_for(rate)  # validates the range
    weights = list(weights) if weights is not None else weights_from_bandwidths(rates)
    if len(weights) != isps or any(not 1 <= w <= MAX_WEIGHT for w in weights):
        raise ValueError(f"weights must be {isps} values in 1..{MAX_WEIGHT}, got {weights}")
    prefix = netns.new_prefix() if prefix is None else prefix
    netns.check_name(f"{prefix}internet")  # the longest role name must be valid
    workdir = Path(workdir)
    return Lab(
        prefix=prefix,
        router=f"{prefix}router",
        internet=f"{prefix}internet",
        lan=f"{prefix}lan" if lan else None,
        isps=[
            IspInfo(
                name=isp_name(i),
                ns=f"{prefix}{isp_name(i)}",
                uplink_if=uplink_if(i),
                gateway=IPv4Address(f"10.{i + 1}.0.1"),
                address=IPv4Interface(f"10.{i + 1}.0.2/24"),
                rate_mbit=rates[i],
                weight=weights[i],
                gateway6=customer_prefix6(i)[1] if ipv6 else None,
                address6=IPv6Interface(f"{customer_prefix6(i)[2]}/64") if ipv6 else None,
            )
            for i in range(isps)
        ],
        servers=[IPv4Address(f"198.51.100.{k}") for k in range(1, servers + 1)],
        alt_servers=[IPv4Address(f"203.0.113.{k}") for k in range(1, servers + 1)],
        servers6=[IPv6Address(f"2001:db8:100::{k:x}") for k in range(1, servers + 1)]
        if ipv6
        else [],
        workdir=workdir,
        config_path=workdir / CONFIG_FILE,
    )


def to_json(lab: Lab) -> dict[str, Any]:
    """Returns the lab as JSON-ready data."""
    return {
        "version": 1,
        "prefix": lab.prefix,
        "router": lab.router,
        "internet": lab.internet,
        "lan": lab.lan,
        "isps": [
            {
                "name": isp.name,
                "ns": isp.ns,
                "uplink_if": isp.uplink_if,
                "gateway": str(isp.gateway),
                "address": str(isp.address),
                "rate_mbit": isp.rate_mbit,
                "weight": isp.weight,
                "gateway6": str(isp.gateway6) if isp.gateway6 is not None else None,
                "address6": str(isp.address6) if isp.address6 is not None else None,
            }
            for isp in lab.isps
        ],
        "servers": [str(a) for a in lab.servers],
        "alt_servers": [str(a) for a in lab.alt_servers],
        "lan_clients": [str(a) for a in lab.lan_clients],
        "servers6": [str(a) for a in lab.servers6],
        "workdir": str(lab.workdir),
        "config_path": str(lab.config_path),
    }


def from_json(data: dict[str, Any]) -> Lab:
    """Returns the Lab described by _to_json data."""
    if data.get("version") != 1:
        raise ValueError(f"unsupported lab state version {data.get('version')!r}")
    isps = [
        IspInfo(
            name=d["name"],
            ns=netns.check_name(d["ns"]),
            uplink_if=d["uplink_if"],
            gateway=IPv4Address(d["gateway"]),
            address=IPv4Interface(d["address"]),
            rate_mbit=int(d["rate_mbit"]),
            weight=int(d["weight"]),
            # Absent from labs saved before IPv6, and null in labs built without it.
            gateway6=IPv6Address(d["gateway6"]) if d.get("gateway6") else None,
            address6=IPv6Interface(d["address6"]) if d.get("address6") else None,
        )
        for d in data["isps"]
    ]
    return Lab(
        prefix=data["prefix"],
        router=netns.check_name(data["router"]),
        internet=netns.check_name(data["internet"]),
        lan=netns.check_name(data["lan"]) if data["lan"] is not None else None,
        isps=isps,
        servers=[IPv4Address(a) for a in data["servers"]],
        alt_servers=[IPv4Address(a) for a in data["alt_servers"]],
        lan_clients=[IPv4Address(a) for a in data["lan_clients"]],
        servers6=[IPv6Address(a) for a in data.get("servers6", [])],
        workdir=Path(data["workdir"]),
        config_path=Path(data["config_path"]),
    )
