"""Golden: YAML config + uplink health in -> the exact `ip` commands of the desired state."""

from __future__ import annotations

import textwrap
from ipaddress import ip_interface
from pathlib import Path

import pytest

from ecmpd.config import parse_config
from ecmpd.connections import without_connections
from ecmpd.desired import desired_state
from ecmpd.export.iptext import state_commands
from ecmpd.facts import InterfaceFacts, KernelFacts
from tests.golden.fixtures import FACTS

TWO_UPLINKS = """
    uplinks:
      - name: isp-a
        interface: wan-a
        gateway: 10.1.0.1
      - name: isp-b
        interface: wan-b
        gateway: 10.2.0.1
        weight: 2
"""


def commands(
    yaml_text: str, health: dict[str, bool] | None = None, facts: KernelFacts = FACTS
) -> list[str]:
    config = parse_config(textwrap.dedent(yaml_text), "ecmpd.yaml")
    return state_commands(without_connections(desired_state(config, health or {}, facts)))


def test_two_weighted_uplinks_with_default_rules() -> None:
    assert commands(TWO_UPLINKS) == [
        "sysctl -w net.ipv4.conf.wan-a.rp_filter=2",
        "sysctl -w net.ipv4.conf.wan-b.rp_filter=2",
        "sysctl -w net.ipv4.fib_multipath_hash_policy=1",
        "ip nexthop add id 248316005 via 10.1.0.1 dev wan-a proto 236",
        "ip nexthop add id 248316006 via 10.2.0.1 dev wan-b proto 236",
        "ip nexthop add id 248316104 group 248316005,1/248316006,2 type resilient buckets 512"
        " idle_timer 0 unbalanced_timer 0 proto 236",
        "ip route add default via 10.1.0.1 dev wan-a src 10.1.0.2 table 101 proto 236",
        "ip route add 10.1.0.0/24 dev wan-a scope link src 10.1.0.2 table 101 proto 236",
        "ip route add default via 10.2.0.1 dev wan-b src 10.2.0.2 table 102 proto 236",
        "ip route add 10.2.0.0/24 dev wan-b scope link src 10.2.0.2 table 102 proto 236",
        "ip route add default nhid 248316104 table 200 proto 236",
        "ip rule add priority 10000 from 10.1.0.2 lookup 101 proto 236",
        "ip rule add priority 10001 from 10.2.0.2 lookup 102 proto 236",
        "ip rule add priority 10100 lookup main suppress_prefixlength 0 proto 236",
        "ip rule add priority 10110 lookup 200 proto 236",
    ]


def test_a_down_uplink_leaves_the_group_and_only_the_group() -> None:
    up = commands(TWO_UPLINKS)
    down = commands(TWO_UPLINKS, {"isp-a": False})
    changed = [(a, b) for a, b in zip(up, down, strict=True) if a != b]
    assert changed == [
        (
            "ip nexthop add id 248316104 group 248316005,1/248316006,2 type resilient buckets 512"
            " idle_timer 0 unbalanced_timer 0 proto 236",
            "ip nexthop add id 248316104 group 248316006,2 type resilient buckets 512"
            " idle_timer 0 unbalanced_timer 0 proto 236",
        )
    ]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            "keep",
            [
                "ip nexthop add id 248316104 group 248316005,1/248316006,2",
                "ip route add default nhid 248316104 table 200",
            ],
        ),
        ("main", []),
        ("unreachable", ["ip route add unreachable default table 200"]),
    ],
)
def test_when_all_down(policy: str, expected: list[str]) -> None:
    yaml_text = TWO_UPLINKS + f"    balancer:\n      when_all_down: {policy}\n"
    cmds = commands(yaml_text, {"isp-a": False, "isp-b": False})
    balancer = [c for c in cmds if "248316104" in c or "table 200" in c]
    assert [c.split(" type ")[0].removesuffix(" proto 236") for c in balancer] == expected


def test_hash_threshold_l3_and_custom_fields() -> None:
    cmds = commands(TWO_UPLINKS + "    balancer: {group: hash-threshold}\n    hash: l3\n")
    assert "sysctl -w net.ipv4.fib_multipath_hash_policy=0" in cmds
    assert ("ip nexthop add id 248316104 group 248316005,1/248316006,2 proto 236") in cmds
    custom = commands(TWO_UPLINKS + "    hash: [src-ip, dst-ip, dst-port]\n")
    assert custom[2:4] == [
        "sysctl -w net.ipv4.fib_multipath_hash_fields=35",
        "sysctl -w net.ipv4.fib_multipath_hash_policy=3",
    ]


def test_bandwidths_become_weights() -> None:
    cmds = commands("""
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, bandwidth: 100Mbit}
          - {name: isp-b, interface: wan-b, gateway: 10.2.0.1, bandwidth: 250Mbit}
    """)
    assert any("group 248316005,2/248316006,5 " in c for c in cmds)


def test_pinned_source_main_rule_and_matches() -> None:
    yaml_text = (
        TWO_UPLINKS
        + """
    rules:
      - {name: local, action: bypass}
      - {name: vpn, from: 192.0.2.50, action: pin, uplink: isp-b}
      - {name: vpn-strict, from: 192.0.2.51, action: pin, uplink: isp-b, strict: true}
      - {name: bank, to: 203.0.113.0/24, action: main}
      - {name: web, proto: tcp, dport: 443, iif: lan0, fwmark: 0x10, action: balance}
      - {name: rest, action: balance}
    """
    )
    rules = [c for c in commands(yaml_text) if " rule " in c]
    assert rules[2:] == [
        "ip rule add priority 10100 lookup main suppress_prefixlength 0 proto 236",
        "ip rule add priority 10110 from 192.0.2.50 lookup 102 proto 236",
        "ip rule add priority 10120 from 192.0.2.51 lookup 102 proto 236",
        "ip rule add priority 10130 to 203.0.113.0/24 lookup main proto 236",
        "ip rule add priority 10140 iif lan0 fwmark 0x10/0xffffffff ipproto 6 dport 443"
        " lookup 200 proto 236",
        "ip rule add priority 10150 lookup 200 proto 236",
    ]
    down = [c for c in commands(yaml_text, {"isp-b": False}) if " rule " in c]
    # Non-strict pin withdrawn (traffic falls through); strict pin refuses.
    assert "ip rule add priority 10110 from 192.0.2.50 lookup 102 proto 236" not in down
    assert "ip rule add priority 10120 from 192.0.2.51 unreachable proto 236" in down


def test_point_to_point_and_dhcp_uplinks() -> None:
    cmds = commands("""
        uplinks:
          - {name: lte, interface: ppp0}
          - {name: cable, interface: dhcp0, gateway: dhcp}
    """)
    assert "ip nexthop add id 248316005 dev ppp0 proto 236" in cmds
    assert "ip route add default dev ppp0 scope link src 100.64.9.9 table 101 proto 236" in cmds
    assert "ip nexthop add id 248316006 via 10.5.0.1 dev dhcp0 proto 236" in cmds
    assert "ip route add default via 10.5.0.1 dev dhcp0 src 10.5.0.77 table 102 proto 236" in cmds


def test_dhcp_without_a_lease_and_a_link_without_carrier_stay_out() -> None:
    facts = KernelFacts(
        interfaces={
            "wan-a": InterfaceFacts(
                "wan-a", 2, carrier=False, addresses=(ip_interface("10.1.0.2/24"),)
            ),
            "dhcp0": InterfaceFacts("dhcp0", 5),
        }
    )
    cmds = commands(
        """
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: 10.1.0.1}
          - {name: cable, interface: dhcp0, gateway: dhcp}
    """,
        facts=facts,
    )
    # No nexthop can exist on a link without carrier; keep mode has nothing to keep.
    assert not any("nexthop" in c for c in cmds)
    assert "ip route add default via 10.1.0.1 dev wan-a src 10.1.0.2 table 101 proto 236" in cmds
    assert not any("dhcp0" in c for c in cmds)


def test_an_uplink_whose_address_went_stays_out_until_it_is_back() -> None:
    """A lease expired (no address), or renumbered off the gateway's subnet."""
    healthy = commands(TWO_UPLINKS)
    for addresses in ((), (ip_interface("10.9.0.2/24"),)):
        lost = InterfaceFacts("wan-b", 102, addresses=addresses)
        facts = KernelFacts(interfaces={**FACTS.interfaces, "wan-b": lost})
        cmds = commands(TWO_UPLINKS, facts=facts)
        # The kernel would refuse these (ENETUNREACH), holding up every other change.
        assert not any("10.2.0.1" in c for c in cmds), cmds
        assert [c for c in cmds if c not in healthy] == [
            "ip nexthop add id 248316104 group 248316005,1 type resilient buckets 512"
            " idle_timer 0 unbalanced_timer 0 proto 236",
            *(
                ["ip rule add priority 10001 from 10.9.0.2 lookup 102 proto 236"]
                if addresses
                else []
            ),
        ]


def test_the_reference_example_renders() -> None:
    example = (Path(__file__).parents[2] / "src/ecmpd/examples/ecmpd.example.yaml").read_text()
    facts = KernelFacts(
        interfaces={
            "eth0": InterfaceFacts("eth0", 2, addresses=(ip_interface("192.168.1.100/24"),)),
            "eth1": InterfaceFacts("eth1", 3, addresses=(ip_interface("192.168.2.100/24"),)),
        }
    )
    config = parse_config(example, "ecmpd.yaml")
    cmds = state_commands(without_connections(desired_state(config, {}, facts)))
    assert [c for c in cmds if " rule " in c] == [
        "ip rule add priority 10000 from 192.168.1.100 lookup 101 proto 236",
        "ip rule add priority 10001 from 192.168.2.100 lookup 102 proto 236",
        "ip rule add priority 10100 lookup main suppress_prefixlength 0 proto 236",
        "ip rule add priority 10110 from 192.168.10.50 lookup 101 proto 236",
        "ip rule add priority 10120 to 203.0.113.0/24 lookup main proto 236",
        "ip rule add priority 10130 lookup 200 proto 236",
    ]


def test_a_gateway6_adds_the_ipv6_side_and_changes_nothing_of_ipv4() -> None:
    v4 = commands(TWO_UPLINKS)
    dual = commands(
        TWO_UPLINKS.replace("gateway: 10.2.0.1", "gateway: 10.2.0.1\n        gateway6: fe80::9")
    )
    assert [c for c in dual if c not in v4] == [
        "sysctl -w net.ipv6.fib_multipath_hash_policy=1",
        "ip -6 nexthop add id 248332390 via fe80::9 dev wan-b proto 236",
        "ip nexthop add id 248332488 group 248332390,2 type resilient buckets 512"
        " idle_timer 0 unbalanced_timer 0 proto 236",
        "ip -6 route add default via fe80::9 dev wan-b metric 1024 table 102 proto 236",
        "ip -6 route add default nhid 248332488 metric 1024 table 200 proto 236",
        "ip -6 rule add priority 10100 lookup main suppress_prefixlength 0 proto 236",
        "ip -6 rule add priority 10110 lookup 200 proto 236",
    ]
    assert [c for c in v4 if c not in dual] == []


def test_router_mode_hashes_l4_by_the_packet_headers() -> None:
    # Policy 1 would hash forwarded packets by the hash they already carry; router mode
    # uses the same five fields as a custom hash (0x37) so flows never change uplink.
    cmds = commands(TWO_UPLINKS + "    mode: router\n")
    assert "sysctl -w net.ipv4.fib_multipath_hash_policy=3" in cmds
    assert "sysctl -w net.ipv4.fib_multipath_hash_fields=55" in cmds
    assert "sysctl -w net.ipv4.ip_forward=1" in cmds
    host = commands(TWO_UPLINKS)
    assert "sysctl -w net.ipv4.fib_multipath_hash_policy=1" in host
    assert not any("hash_fields" in c for c in host)
