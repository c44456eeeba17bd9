"""Pure: the pin reset sets of table `inet ecmpd` as nft JSON, and back.

When a pin's first choice carries again, the pinned connections left on a fallback uplink
get resets (ecmpd.pinresets), and only those: the table's reset chain looks a LAN TCP
packet up in an interval set keyed by the pin's match and the uplink's mark,
`ip saddr . ip daddr . tcp sport . tcp dport . ct mark & M` (IPv6: `ip6`), one set per
family. Elements are written the way `nft -j list` prints them (a host address bare, a
one-port range as the port), so a listing compares equal to what was written.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Any

from ecmpd.model import IPNetwork, NftTable, PinReset, PortRange

Doc = dict[str, Any]
SETS = {"ipv4": "pins4", "ipv6": "pins6"}  # nfproto -> set name
_ADDR = {"ipv4": "ipv4_addr", "ipv6": "ipv6_addr"}
_L3 = {"ipv4": "ip", "ipv6": "ip6"}


def pins_of(table: NftTable) -> dict[str, tuple[PinReset, ...]]:
    """The table's pin resets by nfproto ("ipv4", "ipv6")."""
    return {"ipv4": table.pins4, "ipv6": table.pins6}


def _addr(net: IPNetwork) -> Any:
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _ports(ports: PortRange) -> Any:
    return ports.start if ports.start == ports.end else {"range": [ports.start, ports.end]}


def set_object(proto: str, pins: tuple[PinReset, ...], ref: Doc) -> Doc:
    """The named set of one family's pin resets (`ref`: its family, table and name)."""
    elements = [
        {"concat": [_addr(p.src), _addr(p.dst), _ports(p.sport), _ports(p.dport), p.mark]}
        for p in sorted(pins)
    ]
    kind = [_ADDR[proto], _ADDR[proto], "inet_service", "inet_service", "mark"]
    return {**ref, "type": kind, "flags": ["interval"], "elem": elements}


def lookup(proto: str, mask: int) -> Doc:
    """The reset rule's match: the packet's key in the family's set."""

    def field(protocol: str, name: str) -> Doc:
        return {"payload": {"protocol": protocol, "field": name}}

    key = [
        field(_L3[proto], "saddr"),
        field(_L3[proto], "daddr"),
        field("tcp", "sport"),
        field("tcp", "dport"),
        {"&": [{"ct": {"key": "mark"}}, mask]},
    ]
    return {"match": {"op": "==", "left": {"concat": key}, "right": f"@{SETS[proto]}"}}


def _net(node: Any) -> IPNetwork:
    if isinstance(node, dict):
        return ip_network(f"{node['prefix']['addr']}/{node['prefix']['len']}")
    return ip_network(ip_address(str(node)))


def _range(node: Any) -> PortRange:
    if isinstance(node, dict):
        start, end = node["range"]
        return PortRange(int(start), int(end))
    return PortRange(int(node), int(node))


def parse_set(body: Doc) -> tuple[PinReset, ...]:
    """The pin resets of a listed set (KeyError, TypeError, ValueError when malformed)."""
    out = []
    for element in body.get("elem", []):
        src, dst, sport, dport, mark = element["concat"]
        out.append(PinReset(_net(src), _net(dst), _range(sport), _range(dport), int(mark)))
    return tuple(sorted(out))
