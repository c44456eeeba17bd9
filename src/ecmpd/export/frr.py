"""`export --format frr`: the FRR (8.4) settings for a router that runs ecmpd beside FRR.

What ecmpd needs of FRR, measured with Debian's FRR 8.4 in namespaces (README "Several
edge routers"):
- `zebra nexthop proto only`: otherwise zebra takes ecmpd's nexthop groups for its own,
  reverts ecmpd's in-place changes and re-creates a group whose members all vanished.
- An edge (`announce`): zebra imports the announce table (`ip import-table N`) and bgpd
  announces its default route (`redistribute table N`), with an equal MED from every
  edge (`set metric 0`) so the core balances over all of them. FRR 8.4 has no `ipv6
  import-table`: with `table6: main` ::/0 is redistributed from the kernel routes,
  picked by its metric (ANNOUNCE_MAIN_METRIC) so no other default is ever announced.
- A core (uplinks with `gateway: bgp`): multipath over the edges (`maximum-paths`,
  `bestpath as-path multipath-relax` for edges in different ASes).
- Both: BFD on the BGP sessions (profile `ecmpd`, 100 ms x 3 by default).

The BGP sessions themselves are the user's: with `--bgp-asn` (and `--bgp-neighbor`)
the export writes a complete `router bgp` block, else the lines that belong in it as
comments.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from ecmpd.config import Config
from ecmpd.facts import KernelFacts
from ecmpd.model import ANNOUNCE_MAIN_METRIC, MAIN_TABLE, Family

FILENAME = "ecmpd-frr.conf"
PEER_GROUP = {Family.INET: "ECMPD", Family.INET6: "ECMPD6"}
PROFILE = "ecmpd"
AF = {Family.INET: "ipv4 unicast", Family.INET6: "ipv6 unicast"}


@dataclass(frozen=True)
class FrrOptions:
    """What the FRR export needs beyond ecmpd's config: the BGP side."""

    asn: int | None = None
    neighbors: tuple[IPv4Address | IPv6Address, ...] = ()
    bfd_interval_ms: int = 100
    bfd_multiplier: int = 3


def files(config: Config, facts: KernelFacts, options: FrrOptions | None = None) -> dict[str, str]:
    """The FRR config snippet, under the name the header refers to."""
    return {FILENAME: render(config, options or FrrOptions())}


def bgp_uplinks(config: Config) -> int:
    """How many uplinks follow BGP-learned gateways (a core's edges)."""
    return sum(1 for u in config.uplinks if u.gateway == "bgp" or u.gateway6 == "bgp")


def render(config: Config, options: FrrOptions) -> str:
    """The snippet: zebra, route-maps, BFD profile, and the `router bgp` block."""
    lines = [
        f"! ecmpd export --format frr: FRR 8.4 settings beside ecmpd ({config.filename}).",
        f"! Load with `vtysh -f {FILENAME}` or merge into /etc/frr/frr.conf; bgpd and bfdd",
        "! must run (/etc/frr/daemons). See ecmpd's README, 'Several edge routers'.",
        "!",
        "! zebra must leave ecmpd's nexthop groups alone.",
        "zebra nexthop proto only",
    ]
    lines += _announce_policy(config)
    lines += [
        "!",
        "! eBGP needs a policy each way (RFC 8212): this one passes everything; tighten it.",
        "route-map ECMPD-PEER permit 10",
        "exit",
        "!",
        f"! BFD on the BGP sessions: a dead peer is noticed in"
        f" {options.bfd_interval_ms * options.bfd_multiplier} ms.",
        "bfd",
        f" profile {PROFILE}",
        f"  detect-multiplier {options.bfd_multiplier}",
        f"  receive-interval {options.bfd_interval_ms}",
        f"  transmit-interval {options.bfd_interval_ms}",
        " exit",
        "exit",
        "!",
    ]
    bgp = _bgp(config, options)
    if options.asn is None:
        lines.append("! Under your `router bgp ASN` (or rerun with --bgp-asn and --bgp-neighbor):")
        lines += [f"!{line}" for line in bgp]
    else:
        lines += [f"router bgp {options.asn}", *bgp, "exit"]
    return "\n".join(lines) + "\n"


def _announce_policy(config: Config) -> list[str]:
    """Import of the announce table, prefix-lists and route-maps (an edge's side)."""
    if config.announce is None:
        return []
    table = config.announce.table
    lines = [
        "!",
        f"! announce: ecmpd keeps a default route in table {table} exactly while enough",
        "! uplinks are in service; zebra imports it and bgpd announces it.",
        f"ip import-table {table}",
        "ip prefix-list ECMPD-DEFAULT4 seq 5 permit 0.0.0.0/0",
        "route-map ECMPD-ANNOUNCE4 permit 10",
        " match ip address prefix-list ECMPD-DEFAULT4",
        " ! an equal MED from every edge: the core balances over all of them",
        " set metric 0",
        "exit",
    ]
    if _announces(config, Family.INET6):
        lines += [
            "ipv6 prefix-list ECMPD-DEFAULT6 seq 5 permit ::/0",
            "route-map ECMPD-ANNOUNCE6 permit 10",
            " match ipv6 address prefix-list ECMPD-DEFAULT6",
            f" ! ecmpd's ::/0 in main (table6: main) has metric {ANNOUNCE_MAIN_METRIC}",
            f" match metric {ANNOUNCE_MAIN_METRIC}",
            " set metric 0",
            "exit",
        ]
    elif _announce6_elsewhere(config):
        table6 = config.announce.table_of(Family.INET6)
        lines += [
            f"! ::/0 is in table {table6}, which FRR 8.4 cannot import (no `ipv6",
            "! import-table`): set `announce: {table6: main}` to announce it.",
        ]
    # Leaving the announce route to other routes' metric would let one shadow it.
    lines.append("! (ecmpd validate warns when another default route would shadow it.)")
    return lines


def _announces(config: Config, family: Family) -> bool:
    """Whether FRR 8.4 can announce the family's route: IPv4 always, IPv6 from main."""
    if config.announce is None or config.announce.min_uplinks.of(family) is None:
        return False
    if not _carried(config, family):
        return False
    return family is Family.INET or config.announce.table_of(family) == MAIN_TABLE


def _announce6_elsewhere(config: Config) -> bool:
    return (
        config.announce is not None
        and config.announce.min_uplinks.ipv6 is not None
        and _carried(config, Family.INET6)
    )


def _carried(config: Config, family: Family) -> bool:
    from ecmpd.uplinkplan import carries

    return any(carries(u, family) for u in config.uplinks)


def _bgp(config: Config, options: FrrOptions) -> list[str]:
    """The lines inside `router bgp`: peer groups, BFD, per family what to send."""
    lines = [" no bgp default ipv4-unicast"]
    paths = bgp_uplinks(config)
    if paths:
        lines.append(" ! edges in different ASes still count as equal paths")
        lines.append(" bgp bestpath as-path multipath-relax")
    families = [f for f in Family if _carried(config, f)]
    for family in families:
        group = PEER_GROUP[family]
        lines += [
            f" neighbor {group} peer-group",
            f" neighbor {group} remote-as external",
            f" neighbor {group} bfd",
            f" neighbor {group} bfd profile {PROFILE}",
        ]
    for neighbor in options.neighbors:
        family = Family.INET if neighbor.version == 4 else Family.INET6
        lines.append(f" neighbor {neighbor} peer-group {PEER_GROUP[family]}")
    for family in families:
        lines.append(f" address-family {AF[family]}")
        if _announces(config, family):
            if family is Family.INET and config.announce is not None:
                source = f"table {config.announce.table}"
            else:
                source = "kernel"
            suffix = "4" if family is Family.INET else "6"
            lines.append(f"  redistribute {source} route-map ECMPD-ANNOUNCE{suffix}")
        if paths:
            lines.append(f"  maximum-paths {paths}")
        group = PEER_GROUP[family]
        lines += [
            f"  neighbor {group} activate",
            f"  neighbor {group} route-map ECMPD-PEER in",
            f"  neighbor {group} route-map ECMPD-PEER out",
            " exit-address-family",
        ]
    return lines
