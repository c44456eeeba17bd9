"""What the golden tests share: the lab's two-uplink config and hand-built kernel facts."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_interface

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
