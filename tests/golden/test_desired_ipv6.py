"""Golden: dual-stack and IPv6-only configs + per-family health in -> the exact `ip` commands."""

from __future__ import annotations

import re
import textwrap
from dataclasses import replace
from ipaddress import ip_address, ip_interface
from pathlib import Path

import pytest

from ecmpd.config import ConfigError, check_against_kernel, parse_config
from ecmpd.connections import without_connections
from ecmpd.desired import desired_state, nexthop_id
from ecmpd.export.iptext import state_commands
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.model import NH_ID_BASE, Family
from ecmpd.plan import SWAP_ID_OFFSET
from tests.golden.fixtures import FACTS_IPV6

DUAL = """
    uplinks:
      - name: isp-a
        interface: wan-a
        gateway: 10.1.0.1
        gateway6: 2001:db8:1::1
      - name: isp-b
        interface: wan-b
        gateway: 10.2.0.1
        gateway6: fe80::1
        weight: 2
"""

RESILIENT = "type resilient buckets 512 idle_timer 0 unbalanced_timer 0 proto 236"
GROUP4 = NH_ID_BASE + 200
GROUP6 = NH_ID_BASE + 0x4000 + 200


def commands(
    yaml_text: str,
    health: dict[str, bool] | None = None,
    health6: dict[str, bool] | None = None,
    facts: KernelFacts = FACTS_IPV6,
) -> list[str]:
    config = parse_config(textwrap.dedent(yaml_text), "ecmpd.yaml")
    return state_commands(without_connections(desired_state(config, health or {}, facts, health6)))


def changed(before: list[str], after: list[str]) -> tuple[list[str], list[str]]:
    """(commands only in before, commands only in after)."""
    return [c for c in before if c not in after], [c for c in after if c not in before]


def test_dual_stack_uplinks_with_a_link_local_gateway() -> None:
    assert commands(DUAL) == [
        "sysctl -w net.ipv4.conf.wan-a.rp_filter=2",
        "sysctl -w net.ipv4.conf.wan-b.rp_filter=2",
        "sysctl -w net.ipv4.fib_multipath_hash_policy=1",
        "sysctl -w net.ipv6.fib_multipath_hash_policy=1",
        "ip nexthop add id 248316005 via 10.1.0.1 dev wan-a proto 236",
        "ip nexthop add id 248316006 via 10.2.0.1 dev wan-b proto 236",
        "ip -6 nexthop add id 248332389 via 2001:db8:1::1 dev wan-a proto 236",
        # A link-local gateway is only meaningful with its device, which a nexthop has.
        "ip -6 nexthop add id 248332390 via fe80::1 dev wan-b proto 236",
        f"ip nexthop add id 248316104 group 248316005,1/248316006,2 {RESILIENT}",
        f"ip nexthop add id 248332488 group 248332389,1/248332390,2 {RESILIENT}",
        "ip -6 route add 2001:db8:1::/64 dev wan-a src 2001:db8:1::2 metric 1024"
        " table 101 proto 236",
        "ip -6 route add default via 2001:db8:1::1 dev wan-a src 2001:db8:1::2 metric 1024"
        " table 101 proto 236",
        # wan-b has no global IPv6 address: no source, so no connected route or reply rule.
        "ip -6 route add default via fe80::1 dev wan-b metric 1024 table 102 proto 236",
        "ip -6 route add default nhid 248332488 metric 1024 table 200 proto 236",
        "ip route add default via 10.1.0.1 dev wan-a src 10.1.0.2 table 101 proto 236",
        "ip route add 10.1.0.0/24 dev wan-a scope link src 10.1.0.2 table 101 proto 236",
        "ip route add default via 10.2.0.1 dev wan-b src 10.2.0.2 table 102 proto 236",
        "ip route add 10.2.0.0/24 dev wan-b scope link src 10.2.0.2 table 102 proto 236",
        "ip route add default nhid 248316104 table 200 proto 236",
        "ip -6 rule add priority 10000 from 2001:db8:1::2 lookup 101 proto 236",
        # The default rules have no addresses: one of each family, at one priority.
        "ip -6 rule add priority 10100 lookup main suppress_prefixlength 0 proto 236",
        "ip -6 rule add priority 10110 lookup 200 proto 236",
        "ip rule add priority 10000 from 10.1.0.2 lookup 101 proto 236",
        "ip rule add priority 10001 from 10.2.0.2 lookup 102 proto 236",
        "ip rule add priority 10100 lookup main suppress_prefixlength 0 proto 236",
        "ip rule add priority 10110 lookup 200 proto 236",
    ]


def test_an_ipv6_only_uplink_has_nothing_of_ipv4() -> None:
    yaml_text = """
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: 10.1.0.1}
          - {name: isp-c, interface: wan-c, gateway6: "fe80::1", source6: "2001:db8:3::2"}
        mode: router
    """
    cmds = commands(yaml_text)
    assert [c for c in cmds if "wan-c" in c] == [
        "sysctl -w net.ipv6.conf.wan-c.accept_ra=2",
        "ip -6 nexthop add id 248332390 via fe80::1 dev wan-c proto 236",
        "ip -6 route add 2001:db8:3::/64 dev wan-c src 2001:db8:3::2 metric 1024"
        " table 102 proto 236",
        "ip -6 route add default via fe80::1 dev wan-c src 2001:db8:3::2 metric 1024"
        " table 102 proto 236",
    ]
    # NAT is IPv4 only: an IPv6-only uplink is not masqueraded.
    config = parse_config(textwrap.dedent(yaml_text), "ecmpd.yaml")
    (table,) = desired_state(config, {}, FACTS_IPV6).nft
    assert table.masquerade == ("wan-a",)
    assert "ip nexthop add id 248316104 group 248316005,1 " + RESILIENT in cmds
    assert f"ip nexthop add id 248332488 group 248332390,1 {RESILIENT}" in cmds
    assert "ip -6 rule add priority 10001 from 2001:db8:3::2 lookup 102 proto 236" in cmds
    assert not any(c.startswith("ip rule") and "10001" in c for c in cmds)


def test_an_ipv6_failure_leaves_only_the_ipv6_group() -> None:
    up = commands(DUAL)
    gone, new = changed(up, commands(DUAL, health6={"isp-a": False}))
    assert gone == [f"ip nexthop add id {GROUP6} group 248332389,1/248332390,2 {RESILIENT}"]
    assert new == [f"ip nexthop add id {GROUP6} group 248332390,2 {RESILIENT}"]
    _, new = changed(up, commands(DUAL, health={"isp-b": False}, health6={"isp-b": True}))
    assert new == [f"ip nexthop add id {GROUP4} group 248316005,1 {RESILIENT}"]


def test_one_verdict_per_uplink_applies_to_both_families() -> None:
    # Callers that know one health per uplink (apply with a daemon's answer, benches).
    _, new = changed(commands(DUAL), commands(DUAL, health={"isp-a": False}))
    assert new == [
        f"ip nexthop add id {GROUP4} group 248316006,2 {RESILIENT}",
        f"ip nexthop add id {GROUP6} group 248332390,2 {RESILIENT}",
    ]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            "keep",
            [
                f"ip nexthop add id {GROUP6} group 248332389,1/248332390,2 {RESILIENT}",
                f"ip -6 route add default nhid {GROUP6} metric 1024 table 200 proto 236",
            ],
        ),
        ("main", []),
        # The kernel reports an IPv6 reject route on lo, with IPv6's default metric.
        (
            "unreachable",
            ["ip -6 route add unreachable default dev lo metric 1024 table 200 proto 236"],
        ),
    ],
)
def test_when_all_down_holds_for_each_family_alone(policy: str, expected: list[str]) -> None:
    yaml_text = DUAL + f"    balancer:\n      when_all_down: {policy}\n"
    cmds = commands(yaml_text, health6={"isp-a": False, "isp-b": False})
    balancer6 = [
        c
        for c in cmds
        if f"id {GROUP6} " in c or (c.startswith("ip -6 route add") and "table 200" in c)
    ]
    assert balancer6 == expected
    # IPv4 is healthy and untouched.
    assert f"ip nexthop add id {GROUP4} group 248316005,1/248316006,2 {RESILIENT}" in cmds


def test_pins_follow_their_family() -> None:
    yaml_text = (
        DUAL
        + """
    rules:
      - {name: local, action: bypass}
      - {name: lan6, from: "2001:db8:200::/56", action: pin, uplink: isp-a, strict: true}
      - {name: lan4, from: 10.200.0.0/16, action: pin, uplink: isp-a, strict: true}
      - {name: marked, fwmark: 7, action: pin, uplink: isp-b}
      - {name: rest, action: balance}
    """
    )
    pins = ("priority 10110", "priority 10120", "priority 10130")
    rules = [c for c in commands(yaml_text) if any(p in c for p in pins)]
    assert rules == [
        "ip -6 rule add priority 10110 from 2001:db8:200::/56 lookup 101 proto 236",
        "ip -6 rule add priority 10130 fwmark 0x7/0xffffffff lookup 102 proto 236",
        "ip rule add priority 10120 from 10.200.0.0/16 lookup 101 proto 236",
        "ip rule add priority 10130 fwmark 0x7/0xffffffff lookup 102 proto 236",
    ]
    # isp-a down in IPv6 only: its IPv6 pin refuses, its IPv4 pin stays.
    _, new = changed(commands(yaml_text), commands(yaml_text, health6={"isp-a": False}))
    assert new == [
        f"ip nexthop add id {GROUP6} group 248332390,2 {RESILIENT}",
        "ip -6 rule add priority 10110 from 2001:db8:200::/56 unreachable proto 236",
    ]
    # isp-b down in IPv6 only: the non-strict pin is withdrawn in IPv6 alone.
    rules_down = [c for c in commands(yaml_text, health6={"isp-b": False}) if "10130" in c]
    assert rules_down == ["ip rule add priority 10130 fwmark 0x7/0xffffffff lookup 102 proto 236"]


def test_a_pin_to_an_uplink_without_the_family() -> None:
    base = """
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, gateway6: "2001:db8:1::1"}
          - {name: isp-b, interface: wan-b, gateway: 10.2.0.1}
        rules:
          - {name: marked, fwmark: 7, action: pin, uplink: isp-b, strict: STRICT}
    """
    # isp-b's table has no IPv6 route: a lookup misses and falls through, like a
    # withdrawn pin; strict refuses rather than let the flow leave by isp-a.
    loose = [c for c in commands(base.replace("STRICT", "false")) if " rule " in c]
    assert "ip -6 rule add priority 10100 fwmark 0x7/0xffffffff lookup 102 proto 236" in loose
    strict = [c for c in commands(base.replace("STRICT", "true")) if " rule " in c]
    assert "ip -6 rule add priority 10100 fwmark 0x7/0xffffffff unreachable proto 236" in strict
    assert "ip rule add priority 10100 fwmark 0x7/0xffffffff lookup 102 proto 236" in strict


def test_hash_sysctls_per_family_custom_fields_include_the_flow_label() -> None:
    cmds = commands(DUAL + "    hash: [src-ip, dst-ip, flowlabel]\n")
    assert [c for c in cmds if "hash" in c] == [
        "sysctl -w net.ipv4.fib_multipath_hash_fields=11",
        "sysctl -w net.ipv4.fib_multipath_hash_policy=3",
        "sysctl -w net.ipv6.fib_multipath_hash_fields=11",
        "sysctl -w net.ipv6.fib_multipath_hash_policy=3",
    ]
    l3 = commands(DUAL + "    hash: l3\n")
    assert "sysctl -w net.ipv6.fib_multipath_hash_policy=0" in l3


def test_router_mode_forwards_ipv6_and_keeps_router_advertisements_on_the_uplinks() -> None:
    cmds = [c for c in commands(DUAL + "    mode: router\n") if c.startswith("sysctl")]
    assert cmds == [
        "sysctl -w net.ipv4.conf.wan-a.rp_filter=2",
        "sysctl -w net.ipv4.conf.wan-b.rp_filter=2",
        # Router mode hashes l4 by the packet headers (policy 3, five fields = 55).
        "sysctl -w net.ipv4.fib_multipath_hash_fields=55",
        "sysctl -w net.ipv4.fib_multipath_hash_policy=3",
        "sysctl -w net.ipv4.ip_forward=1",
        "sysctl -w net.ipv6.conf.all.forwarding=1",
        "sysctl -w net.ipv6.conf.wan-a.accept_ra=2",
        "sysctl -w net.ipv6.conf.wan-b.accept_ra=2",
        "sysctl -w net.ipv6.fib_multipath_hash_fields=55",
        "sysctl -w net.ipv6.fib_multipath_hash_policy=3",
    ]


def test_ipv4_only_configs_have_nothing_of_ipv6() -> None:
    cmds = commands("""
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: 10.1.0.1}
          - {name: isp-b, interface: wan-b, gateway: 10.2.0.1}
        mode: router
    """)
    # wan-a has an IPv6 address, but without gateway6/source6 the uplink is IPv4 only.
    assert not any("ipv6" in c or "ip -6" in c or ":" in c.split("proto")[0] for c in cmds)


def test_ipv6_object_ids_sit_in_their_own_block() -> None:
    assert nexthop_id(101) == NH_ID_BASE + 101
    assert nexthop_id(101, Family.INET6) == NH_ID_BASE + 0x4000 + 101
    # Every id of both families and the swap twins is distinct for tables up to 16383.
    tables = (1, 0x3FFF)
    ids = [
        nexthop_id(t, f) + swap
        for t in tables
        for f in (Family.INET, Family.INET6)
        for swap in (0, SWAP_ID_OFFSET)
    ]
    assert len(set(ids)) == len(ids)


def test_tables_above_16383_are_refused_only_with_ipv6() -> None:
    big = "    balancer: {table: 20000}\n"
    with pytest.raises(ConfigError) as err:
        parse_config(textwrap.dedent(DUAL + big), "ecmpd.yaml")
    assert "balancer.table: must be at most 16383 when an uplink has IPv6" in str(err.value)
    v4 = """
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, table: 30000}
    """
    assert parse_config(textwrap.dedent(v4)).uplinks[0].table == 30000


def test_check_targets_need_their_family_on_the_uplink() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(
            textwrap.dedent("""
            uplinks:
              - name: isp-a
                interface: wan-a
                gateway: 10.1.0.1
                check: {targets: [10.1.0.1, "2001:db8::53"]}
            """),
            "ecmpd.yaml",
        )
    assert (
        "uplinks[0].check.targets[1]: 2001:db8::53 is IPv6, but this uplink has no"
        " gateway6 or source6"
    ) in str(err.value)


def test_kernel_checks_cover_ipv6_ids_and_gateways() -> None:
    config = parse_config(textwrap.dedent(DUAL), "ecmpd.yaml")
    facts = KernelFacts(
        interfaces=FACTS_IPV6.interfaces, foreign_nexthop_ids=frozenset({NH_ID_BASE + 0x4000 + 102})
    )
    issues = [str(i) for i in check_against_kernel(config, facts)]
    assert issues == [
        "ecmpd.yaml:7: uplinks[1].table: nexthop id 248332390 (ecmpd's IPv6 for table 102)"
        " is taken by a foreign nexthop"
    ]
    off_link = parse_config(textwrap.dedent(DUAL.replace("2001:db8:1::1", "2001:db8:9::1")))
    assert [i.field for i in check_against_kernel(off_link, FACTS_IPV6)] == ["uplinks[0].gateway6"]


def test_the_reference_examples_ipv6_block_renders() -> None:
    example = (Path(__file__).parents[2] / "src/ecmpd/examples/ecmpd.example.yaml").read_text()
    # Do what the comments say: isp-a dual-stack, the delegated prefix pinned to it.
    text = re.sub(r"    # (gateway6|source6): (\S+)", r"    \1: \2", example)
    block = re.findall(r"^#   (.*)$", example, re.MULTILINE)
    assert block[0].startswith("- name: isp-a-prefix")
    text = text.replace(
        "  - name: bank", "\n".join(f"  {line}" for line in block) + "\n  - name: bank"
    )
    facts = KernelFacts(
        interfaces={
            "eth0": InterfaceFacts(
                "eth0",
                2,
                addresses=(ip_interface("192.168.1.100/24"), ip_interface("2001:db8:1::2/64")),
            ),
            "eth1": InterfaceFacts("eth1", 3, addresses=(ip_interface("192.168.2.100/24"),)),
        }
    )
    config = parse_config(text, "ecmpd.yaml")
    cmds = state_commands(without_connections(desired_state(config, {}, facts)))
    assert [c for c in cmds if c.startswith("ip -6 rule")] == [
        "ip -6 rule add priority 10000 from 2001:db8:1::2 lookup 101 proto 236",
        "ip -6 rule add priority 10100 lookup main suppress_prefixlength 0 proto 236",
        "ip -6 rule add priority 10120 from 2001:db8:200::/56 lookup 101 proto 236",
        "ip -6 rule add priority 10140 lookup 200 proto 236",
    ]
    assert "ip -6 nexthop add id 248332389 via fe80::1 dev eth0 proto 236" in cmds
    down = state_commands(without_connections(desired_state(config, {}, facts, {"isp-a": False})))
    assert "ip -6 rule add priority 10120 from 2001:db8:200::/56 unreachable proto 236" in down


def test_gateway6_ra_takes_the_advertised_router_and_waits_without_one() -> None:
    ra = DUAL.replace("gateway6: fe80::1", "gateway6: ra")
    advertised = KernelFacts(
        interfaces={
            **FACTS_IPV6.interfaces,
            "wan-b": replace(FACTS_IPV6.interfaces["wan-b"], dhcp_gateway6=ip_address("fe80::9")),
        }
    )
    with_router = commands(ra, facts=advertised)
    assert "ip -6 nexthop add id 248332390 via fe80::9 dev wan-b proto 236" in with_router
    assert "ip -6 route add default via fe80::9 dev wan-b metric 1024 table 102 proto 236" in (
        with_router
    )
    assert f"ip nexthop add id 248332488 group 248332389,1/248332390,2 {RESILIENT}" in with_router
    # No router yet: isp-b's IPv6 has nowhere to go (no gateway-less default route),
    # its IPv4 is untouched, and the config is no error (the router may come later).
    without = commands(ra)
    gone, added = changed(with_router, without)
    assert added == [f"ip nexthop add id 248332488 group 248332389,1 {RESILIENT}"]
    assert all("fe80::9" in c or "248332488" in c for c in gone), gone
    assert check_against_kernel(parse_config(textwrap.dedent(ra)), FACTS_IPV6) == []


def test_router_mode_listens_for_a_first_router_on_an_ra_uplink() -> None:
    """accept_ra=2 before any router is known (and after the last withdrew), not only after."""
    ra = DUAL.replace("gateway6: fe80::1", "gateway6: ra") + "    mode: router\n"
    without = commands(ra)
    assert "sysctl -w net.ipv6.conf.wan-b.accept_ra=2" in without
    assert not any("via fe80::" in c and "wan-b" in c for c in without)
    # Link down too: the sysctl stays, so a carrier flap does not reset it to 1.
    down = KernelFacts(
        interfaces={
            **FACTS_IPV6.interfaces,
            "wan-b": replace(FACTS_IPV6.interfaces["wan-b"], up=False),
        }
    )
    assert "sysctl -w net.ipv6.conf.wan-b.accept_ra=2" in commands(ra, facts=down)
    # No interface yet (a tunnel not made yet): nothing to write to.
    gone = KernelFacts(interfaces={k: v for k, v in FACTS_IPV6.interfaces.items() if k != "wan-b"})
    assert not any("wan-b.accept_ra" in c for c in commands(ra, facts=gone))
