"""ecmpd.ending's pure choices: which uplinks' connections end, with which mark."""

from __future__ import annotations

import textwrap
from ipaddress import IPv4Address, IPv6Address, ip_interface, ip_network

from ecmpd.config import parse_config
from ecmpd.ending import ending_now, endings
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.health.service import ServiceChange
from ecmpd.model import Family

CONFIG = parse_config(
    textwrap.dedent("""
    mode: router
    uplinks:
      - {name: a, interface: wan-a, gateway: 10.1.0.1, gateway6: "2001:db8:1::1"}
      - {name: b, interface: wan-b, gateway: 10.2.0.1}
      - {name: c, interface: wan-c, gateway: 10.3.0.1, on_failure: wait}
    """),
    "ecmpd.yaml",
)
FACTS = KernelFacts(
    interfaces={
        "wan-a": InterfaceFacts(
            "wan-a", 2, addresses=(ip_interface("10.1.0.2/24"), ip_interface("2001:db8:1::2/64"))
        ),
        "wan-b": InterfaceFacts("wan-b", 3, addresses=(ip_interface("10.2.0.2/24"),)),
        "wan-c": InterfaceFacts("wan-c", 4, addresses=(ip_interface("10.3.0.2/24"),)),
    },
    mark_slots=(("a", 7),),  # recorded: a keeps 7 although its table is 101
)
V4, V6 = Family.INET, Family.INET6


def test_ending_now_leaves_drained_and_waiting_uplinks_alone() -> None:
    service = {V4: {"a": False, "b": False, "c": False}, V6: {"a": True, "b": True, "c": True}}
    assert ending_now(CONFIG, service, drained={"b"}) == {V4: {"a"}, V6: set()}


def test_endings_carry_the_recorded_mark_and_the_families_that_left() -> None:
    changes = [
        ServiceChange("a", V6, False),
        ServiceChange("a", V4, False),
        ServiceChange("b", V4, False),
        ServiceChange("c", V4, False),  # waits
        ServiceChange("b", V4, True),  # a rejoin ends nothing
    ]
    got = dict(endings(CONFIG, changes, drained={"b"}, facts=FACTS))
    assert set(got) == {"a"}
    a = got["a"]
    assert (a.mark, a.mask, a.probe_mark) == (0x07000000, 0xFF000000, 0xFF000000)
    assert a.families == (V6, V4)
    assert a.sources == (IPv6Address("2001:db8:1::2"), IPv4Address("10.1.0.2"))
    # Its link's prefixes and gateways: the router's sockets to a neighbour there stay.
    assert a.on_link == tuple(
        ip_network(n)
        for n in ("2001:db8:1::/64", "2001:db8:1::1/128", "10.1.0.0/24", "10.1.0.1/32")
    )
    assert endings(CONFIG, changes, drained=(), facts=FACTS)[1][0] == "b"
