"""Golden: `export --format frr` for an edge (announce) and a core (gateway: bgp)."""

from __future__ import annotations

import textwrap
from ipaddress import ip_address

from ecmpd.config import parse_config
from ecmpd.export.frr import FrrOptions, render

EDGE = """
    mode: router
    uplinks:
      - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, gateway6: "2001:db8:1::1"}
      - {name: isp-b, interface: wan-b, gateway: 10.2.0.1, gateway6: "2001:db8:2::1"}
    announce: {table: 150, table6: main}
"""
CORE = """
    mode: router
    uplinks:
      - {name: edge1, interface: core-e1, gateway: bgp, nat: false}
      - {name: edge2, interface: core-e2, gateway: bgp, nat: false}
"""


def frr(text: str, options: FrrOptions) -> list[str]:
    return render(parse_config(textwrap.dedent(text), "ecmpd.yaml"), options).splitlines()


def test_edge_imports_the_announce_table_and_redistributes_ipv6_from_main() -> None:
    lines = frr(EDGE, FrrOptions(65001, (ip_address("10.0.1.2"), ip_address("fd00:1::2"))))
    body = [line for line in lines if not line.lstrip().startswith("!")]
    assert body == [
        "zebra nexthop proto only",
        "ip import-table 150",
        "ip prefix-list ECMPD-DEFAULT4 seq 5 permit 0.0.0.0/0",
        "route-map ECMPD-ANNOUNCE4 permit 10",
        " match ip address prefix-list ECMPD-DEFAULT4",
        " set metric 0",
        "exit",
        "ipv6 prefix-list ECMPD-DEFAULT6 seq 5 permit ::/0",
        "route-map ECMPD-ANNOUNCE6 permit 10",
        " match ipv6 address prefix-list ECMPD-DEFAULT6",
        " match metric 236",
        " set metric 0",
        "exit",
        "route-map ECMPD-PEER permit 10",
        "exit",
        "bfd",
        " profile ecmpd",
        "  detect-multiplier 3",
        "  receive-interval 100",
        "  transmit-interval 100",
        " exit",
        "exit",
        "router bgp 65001",
        " no bgp default ipv4-unicast",
        " neighbor ECMPD peer-group",
        " neighbor ECMPD remote-as external",
        " neighbor ECMPD bfd",
        " neighbor ECMPD bfd profile ecmpd",
        " neighbor ECMPD6 peer-group",
        " neighbor ECMPD6 remote-as external",
        " neighbor ECMPD6 bfd",
        " neighbor ECMPD6 bfd profile ecmpd",
        " neighbor 10.0.1.2 peer-group ECMPD",
        " neighbor fd00:1::2 peer-group ECMPD6",
        " address-family ipv4 unicast",
        "  redistribute table 150 route-map ECMPD-ANNOUNCE4",
        "  neighbor ECMPD activate",
        "  neighbor ECMPD route-map ECMPD-PEER in",
        "  neighbor ECMPD route-map ECMPD-PEER out",
        " exit-address-family",
        " address-family ipv6 unicast",
        "  redistribute kernel route-map ECMPD-ANNOUNCE6",
        "  neighbor ECMPD6 activate",
        "  neighbor ECMPD6 route-map ECMPD-PEER in",
        "  neighbor ECMPD6 route-map ECMPD-PEER out",
        " exit-address-family",
        "exit",
    ]


def test_an_ipv6_announce_table_says_frr_84_cannot_import_it() -> None:
    lines = frr(EDGE.replace(", table6: main", ""), FrrOptions())
    assert "! ::/0 is in table 150, which FRR 8.4 cannot import (no `ipv6" in lines
    assert not any("redistribute kernel" in line for line in lines)


def test_core_multipaths_over_its_bgp_uplinks_and_without_asn_comments_the_bgp_block() -> None:
    lines = frr(CORE, FrrOptions(bfd_interval_ms=50, bfd_multiplier=4))
    assert "zebra nexthop proto only" in lines
    assert "  detect-multiplier 4" in lines and "  receive-interval 50" in lines
    assert not any("import-table" in line for line in lines)
    bgp = lines[
        lines.index("! Under your `router bgp ASN` (or rerun with --bgp-asn and --bgp-neighbor):")
        + 1 :
    ]
    assert all(line.startswith("!") for line in bgp)
    assert "! bgp bestpath as-path multipath-relax" in bgp
    assert "!  maximum-paths 2" in bgp
