"""What the golden tests share (no tests here): configs, hand-built kernel facts, and the
networkd files of a config."""

from __future__ import annotations

import textwrap
from ipaddress import IPv4Address, IPv6Address, ip_interface

from ecmpd.config import parse_config
from ecmpd.export import networkd
from ecmpd.facts import InterfaceFacts, KernelFacts

# Interfaces of every kind an uplink can sit on: plain, point-to-point, DHCP-managed.
FACTS = KernelFacts(
    interfaces={
        "wan-a": InterfaceFacts(
            "wan-a",
            101,
            addresses=(ip_interface("10.1.0.2/24"), ip_interface("fe80::1/64")),
        ),
        "wan-b": InterfaceFacts("wan-b", 102, addresses=(ip_interface("10.2.0.2/24"),)),
        "ppp0": InterfaceFacts(
            "ppp0", 4, pointopoint=True, addresses=(ip_interface("100.64.9.9/32"),)
        ),
        "dhcp0": InterfaceFacts(
            "dhcp0",
            5,
            addresses=(ip_interface("10.5.0.77/24"),),
            dhcp_gateway=IPv4Address("10.5.0.1"),
        ),
    }
)

# What `ecmpd lab` writes for two ISPs (weights from 100 and 200 Mbit).
LAB = """
    uplinks:
      - name: isp-a
        interface: wan-a
        gateway: 10.1.0.1
        source: 10.1.0.2
        weight: 1
        table: 101
        check: {targets: [10.1.0.1, 198.51.100.1]}
      - name: isp-b
        interface: wan-b
        gateway: 10.2.0.1
        source: 10.2.0.2
        weight: 2
        table: 102
        check: {targets: [10.2.0.1, 198.51.100.1]}
    rules:
      - {name: local, action: bypass}
      - {name: everything-else, action: balance}
"""

# Dual-stack interfaces, one per kind of IPv6 gateway: link-local (wan-a), global
# (wan-b), none on a point-to-point link (ppp6), and advertised by a router (ra0).
FACTS6 = KernelFacts(
    interfaces={
        "wan-a": InterfaceFacts(
            "wan-a",
            101,
            addresses=(
                ip_interface("10.1.0.2/24"),
                ip_interface("2001:db8:1::2/64"),
                ip_interface("fe80::2/64"),
            ),
        ),
        "wan-b": InterfaceFacts(
            "wan-b",
            102,
            addresses=(ip_interface("10.2.0.2/24"), ip_interface("2001:db8:2::2/64")),
        ),
        "ppp6": InterfaceFacts(
            "ppp6", 103, pointopoint=True, addresses=(ip_interface("2001:db8:9::9/128"),)
        ),
        "ra0": InterfaceFacts(
            "ra0",
            104,
            addresses=(ip_interface("10.4.0.2/24"), ip_interface("2001:db8:4::77/64")),
            dhcp_gateway6=IPv6Address("fe80::4"),
        ),
    }
)

# The lab's two ISPs dual-stack, an IPv6-only point-to-point uplink and one that follows
# router advertisements; rules of both families and for both.
DUAL = """
    uplinks:
      - name: isp-a
        interface: wan-a
        gateway: 10.1.0.1
        gateway6: "fe80::1"
        source6: "2001:db8:1::2"
        weight: 1
        table: 101
      - name: isp-b
        interface: wan-b
        gateway: 10.2.0.1
        gateway6: "2001:db8:2::1"
        weight: 2
        table: 102
      - {name: lte, interface: ppp6, source6: "2001:db8:9::9", table: 103}
      - {name: cable, interface: ra0, gateway: 10.4.0.1, gateway6: ra, table: 104}
    rules:
      - {name: local, action: bypass}
      - {name: v6-pin, from: "2001:db8:77::/48", action: pin, uplink: isp-b}
      - {name: v6-bank, to: "2001:db8:88::/48", action: main}
      - {name: everything-else, action: balance}
"""

# wan-a: dual-stack with a global IPv6 address; wan-b: IPv4 and only a link-local
# IPv6 address; wan-c: IPv6 only.
FACTS_IPV6 = KernelFacts(
    interfaces={
        "wan-a": InterfaceFacts(
            "wan-a",
            101,
            addresses=(
                ip_interface("10.1.0.2/24"),
                ip_interface("fe80::a/64"),
                ip_interface("2001:db8:1::2/64"),
            ),
        ),
        "wan-b": InterfaceFacts(
            "wan-b", 102, addresses=(ip_interface("10.2.0.2/24"), ip_interface("fe80::b/64"))
        ),
        "wan-c": InterfaceFacts(
            "wan-c", 103, addresses=(ip_interface("2001:db8:3::2/64"), ip_interface("fe80::c/64"))
        ),
    }
)


def networkd_files(yaml_text: str, facts: KernelFacts = FACTS) -> dict[str, str]:
    """The networkd files of a YAML config (dedented), rendered against the facts."""
    return networkd.files(parse_config(textwrap.dedent(yaml_text), "lab.yaml"), facts)
