"""Golden: YAML config + kernel facts in -> the exact `ip -batch` script of `export --format ip`."""

from __future__ import annotations

import textwrap
from ipaddress import ip_interface

from ecmpd.config import parse_config
from ecmpd.connections import without_connections
from ecmpd.desired import desired_state
from ecmpd.export import ipbatch
from ecmpd.export.iptext import state_commands
from ecmpd.facts import InterfaceFacts, KernelFacts
from tests.golden.fixtures import DUAL, FACTS, FACTS6, LAB

# The resilient group's parameters, too long to repeat on one line.
RESILIENT = "type resilient buckets 512 idle_timer 0 unbalanced_timer 0"
# Loose reverse-path filtering on each uplink, part of every desired state.
RP = "net.ipv4.conf.wan-a.rp_filter=2 net.ipv4.conf.wan-b.rp_filter=2"


def script(yaml_text: str, facts: KernelFacts = FACTS) -> str:
    config = parse_config(textwrap.dedent(yaml_text), "lab.yaml")
    return ipbatch.render(config, facts)


def test_the_lab_config() -> None:
    assert script(LAB) == textwrap.dedent("""\
        # ecmpd export --format ip: the kernel state `ecmpd apply` builds for lab.yaml
        # (every uplink assumed healthy), as a script for `ip -batch`. Save it as
        # ecmpd.batch and run, as root:
        #   sysctl -w {RP} net.ipv4.fib_multipath_hash_policy=1 && ip -batch ecmpd.batch
        # Every object carries ecmpd's protocol id (236), so `ecmpd apply` later finds them
        # in place and takes them for its own.
        # Not here: ecmpd's nftables table (connection marks) and its rules.

        # sysctls (run these first; `ip -batch` cannot set them):
        # sysctl -w net.ipv4.conf.wan-a.rp_filter=2
        # sysctl -w net.ipv4.conf.wan-b.rp_filter=2
        # sysctl -w net.ipv4.fib_multipath_hash_policy=1

        nexthop add id 248316005 via 10.1.0.1 dev wan-a proto 236
        nexthop add id 248316006 via 10.2.0.1 dev wan-b proto 236
        nexthop add id 248316104 group 248316005,1/248316006,2 {RESILIENT} proto 236
        route add default via 10.1.0.1 dev wan-a src 10.1.0.2 table 101 proto 236
        route add 10.1.0.0/24 dev wan-a scope link src 10.1.0.2 table 101 proto 236
        route add default via 10.2.0.1 dev wan-b src 10.2.0.2 table 102 proto 236
        route add 10.2.0.0/24 dev wan-b scope link src 10.2.0.2 table 102 proto 236
        route add default nhid 248316104 table 200 proto 236
        rule add priority 10000 from 10.1.0.2 lookup 101 proto 236
        rule add priority 10001 from 10.2.0.2 lookup 102 proto 236
        rule add priority 10100 lookup main suppress_prefixlength 0 proto 236
        rule add priority 10110 lookup 200 proto 236
    """).replace("{RESILIENT}", RESILIENT).replace("{RP}", RP)


def test_ipv6_rules_ride_in_marked_lines_and_the_header_runs_them() -> None:
    text = script(
        LAB
        + """
      - {name: v6-main, to: "2001:db8::/32", action: main}
      - {name: v6-pin, from: "2001:db8:1::/48", action: pin, uplink: isp-b}
    """
    )
    assert (
        f"#   sysctl -w {RP} net.ipv4.fib_multipath_hash_policy=1 && ip -batch ecmpd.batch"
        " && sed -n 's/^#6 //p' ecmpd.batch | ip -6 -batch -\n"
    ) in text
    assert text.endswith(
        textwrap.dedent("""\
        rule add priority 10110 lookup 200 proto 236

        # IPv6 (for `ip -6 -batch`, see above):
        #6 rule add priority 10120 to 2001:db8::/32 lookup main proto 236
        #6 rule add priority 10130 from 2001:db8:1::/48 lookup 102 proto 236
    """)
    )


def test_custom_hash_sets_both_sysctls_in_one_command() -> None:
    text = script(LAB + "    hash: [src-ip, dst-ip, dst-port]\n")
    assert (
        f"#   sysctl -w {RP} net.ipv4.fib_multipath_hash_fields=35"
        " net.ipv4.fib_multipath_hash_policy=3"
        " && ip -batch ecmpd.batch\n"
    ) in text


def test_router_mode_says_nat_is_not_included() -> None:
    router = script(LAB + "    mode: router\n")
    assert "ecmpd's nftables table (connection marks and NAT) and its rules" in router


def test_the_batch_lines_are_the_desired_state_commands() -> None:
    # Same facts, same order as `plan` would print them against an empty kernel; a
    # link without carrier stays out exactly as `apply` would leave it out.
    facts = KernelFacts(
        interfaces={
            **FACTS.interfaces,
            "wan-b": InterfaceFacts(
                "wan-b", 102, carrier=False, addresses=(ip_interface("10.2.0.2/24"),)
            ),
        }
    )
    config = parse_config(textwrap.dedent(LAB), "lab.yaml")
    expected = state_commands(without_connections(desired_state(config, {}, facts)))
    lines = [line for line in ipbatch.render(config, facts).splitlines() if line[:1] not in "#"]
    assert [f"ip {line}" for line in lines if line] == [
        c for c in expected if not c.startswith("sysctl")
    ]
    assert not any("248316006" in line for line in lines)


def test_every_nexthop_precedes_the_groups_in_the_ipv4_run() -> None:
    # `ip -6` cannot add a group ("Invalid family for group") and the groups need their
    # members first: IPv6 nexthops stay in the IPv4 run, their gateway telling the
    # family; `via ::` (no gateway) tells it for the point-to-point one.
    text = script(DUAL, FACTS6)
    assert "# `via ::` adds an IPv6 nexthop without a gateway.\n" in text
    nexthops = [line for line in text.splitlines() if line.startswith("nexthop add")]
    assert [line.removesuffix(" proto 236").split(" type ")[0] for line in nexthops] == [
        "nexthop add id 248316005 via 10.1.0.1 dev wan-a",
        "nexthop add id 248316006 via 10.2.0.1 dev wan-b",
        "nexthop add id 248316008 via 10.4.0.1 dev ra0",
        "nexthop add id 248332389 via fe80::1 dev wan-a",
        "nexthop add id 248332390 via 2001:db8:2::1 dev wan-b",
        "nexthop add id 248332391 via :: dev ppp6",
        "nexthop add id 248332392 via fe80::4 dev ra0",  # the advertised router
        "nexthop add id 248316104 group 248316005,1/248316006,2/248316008,1",
        "nexthop add id 248332488 group 248332389,1/248332390,2/248332391,1/248332392,1",
    ]
    assert "#6 route add default dev ppp6 src 2001:db8:9::9 metric 1024 table 103 proto 236\n" in (
        text
    )
    assert "#6 rule add priority 10130 lookup 200 proto 236\n" in text
    # `plan` says the plain command: there, `ip -6` gives the family.
    config = parse_config(textwrap.dedent(DUAL), "lab.yaml")
    commands = state_commands(without_connections(desired_state(config, {}, FACTS6)))
    assert "ip -6 nexthop add id 248332391 dev ppp6 proto 236" in commands


def test_without_ipv6_nothing_says_via_unspecified() -> None:
    assert "via ::" not in script(LAB)
