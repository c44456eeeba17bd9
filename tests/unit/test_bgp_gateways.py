"""`gateway: bgp`: a core's edges come from zebra's multipath default (RTA_MULTIPATH).

The payload is packed as the kernel sends it (checked against pyroute2's encoding of
the same route), parsed by routemsg, and turned into per-interface gateways.
"""

from __future__ import annotations

import socket
import textwrap
from ipaddress import IPv4Address, ip_interface

from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ecmpd.config import parse_config
from ecmpd.desired import uplink_plans
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.kernel.observe import default_gateways
from ecmpd.kernel.routemsg import parse_route
from ecmpd.model import Family


def zebra_default() -> bytes:
    """A BGP multipath default over two edges, as zebra installs it (proto bgp)."""
    msg = rtmsg()
    msg["family"] = socket.AF_INET
    msg["dst_len"] = 0
    msg["table"] = 254
    msg["proto"] = 186
    msg["type"] = 1
    msg["attrs"] = [
        ("RTA_TABLE", 254),
        ("RTA_PRIORITY", 20),
        (
            "RTA_MULTIPATH",
            [
                {"oif": 7, "hops": 0, "attrs": [("RTA_GATEWAY", "10.0.1.1")]},
                {"oif": 8, "hops": 0, "attrs": [("RTA_GATEWAY", "10.0.2.1")]},
            ],
        ),
    ]
    msg.encode()
    return bytes(msg.data[16 : msg["header"]["length"]])


def test_a_multipath_default_gives_each_interface_its_gateway() -> None:
    route = parse_route(zebra_default())
    assert route is not None and route.protocol == 186
    assert route.nexthops == ((7, IPv4Address("10.0.1.1")), (8, IPv4Address("10.0.2.1")))
    assert default_gateways([route]) == {7: IPv4Address("10.0.1.1"), 8: IPv4Address("10.0.2.1")}


def test_an_edge_without_a_bgp_route_is_not_usable() -> None:
    config = parse_config(
        textwrap.dedent(
            """
            mode: router
            uplinks:
              - {name: edge1, interface: core-e1, gateway: bgp, nat: false}
              - {name: edge2, interface: core-e2, gateway: bgp, nat: false}
            """
        ),
        "ecmpd.yaml",
    )
    facts = KernelFacts(
        interfaces={
            "core-e1": InterfaceFacts(
                "core-e1",
                7,
                addresses=(ip_interface("10.0.1.2/24"),),
                bgp_gateway=IPv4Address("10.0.1.1"),
            ),
            "core-e2": InterfaceFacts("core-e2", 8, addresses=(ip_interface("10.0.2.2/24"),)),
        }
    )
    plans = {u.name: u for u in uplink_plans(config, {}, facts)[Family.INET]}
    assert plans["edge1"].in_service and plans["edge1"].gateway == IPv4Address("10.0.1.1")
    assert not plans["edge2"].usable and plans["edge2"].gateway is None
    assert config.follows_bgp() and not config.follows_defaults()
