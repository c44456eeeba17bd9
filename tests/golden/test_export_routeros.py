"""Golden: YAML config in -> the exact RouterOS v7 script of `export --format routeros`."""

from __future__ import annotations

import textwrap
from ipaddress import IPv4Address, ip_interface
from pathlib import Path

import pytest

from ecmpd.config import parse_config
from ecmpd.export import routeros, routeros_routes
from ecmpd.facts import InterfaceFacts, KernelFacts
from tests.golden.fixtures import DUAL, FACTS6

EXAMPLE = Path(__file__).parents[2] / "src/ecmpd/examples/ecmpd.example.yaml"
EXAMPLE_FACTS = KernelFacts(
    interfaces={
        "eth0": InterfaceFacts("eth0", 2, addresses=(ip_interface("192.168.1.100/24"),)),
        "eth1": InterfaceFacts("eth1", 3, addresses=(ip_interface("192.168.2.100/24"),)),
    }
)
LAB_FACTS = KernelFacts(
    interfaces={
        f"wan-{x}": InterfaceFacts(f"wan-{x}", 100 + i, addresses=(ip_interface(f"10.{i}.0.2/24"),))
        for i, x in enumerate("abc", start=1)
    }
)


def lab(rules: str = "", extra: str = "", weights: tuple[int, int, int] = (2, 4, 1)) -> str:
    """The config `ecmpd lab` writes for three ISPs, every check aimed at one server."""
    uplinks = "".join(
        f"""
      - name: isp-{x}
        interface: wan-{x}
        gateway: 10.{i}.0.1
        weight: {w}
        check: {{targets: [10.{i}.0.1, 198.51.100.1], method: "tcp:443"}}"""
        for i, (x, w) in enumerate(zip("abc", weights, strict=True), start=1)
    )
    rules = rules or "\n      - {name: everything-else, action: balance}"
    return f"    uplinks:{uplinks}\n    rules:{rules}\n{extra}"


def script(yaml_text: str, facts: KernelFacts = LAB_FACTS) -> str:
    return routeros.render(parse_config(textwrap.dedent(yaml_text), "ecmpd.yaml"), facts)


def test_the_reference_example() -> None:
    config = parse_config(EXAMPLE.read_text(), "ecmpd.yaml")
    text = routeros.render(config, EXAMPLE_FACTS)
    header, _, body = text.partition("\n\n")
    assert header.splitlines()[0] == (
        "# ecmpd export --format routeros: the policy of ecmpd.yaml as a RouterOS v7"
    )
    assert "# Weights: RouterOS ECMP routes have no weights. Each gateway is repeated in" in header
    assert body == textwrap.dedent("""\
        /ip settings
        set ipv4-multipath-hash-policy=l4

        /routing table
        add name=ecmp fib comment="ecmpd balancer (table 200)"
        add name=isp-a fib comment="ecmpd uplink isp-a (table 101)"
        add name=isp-b fib comment="ecmpd uplink isp-b (table 102)"

        /ip route
        # isp-a: checked through 198.51.100.1 by a recursive route; the host route
        # to it, in main, also sends the router's own traffic to it that way.
        add dst-address=198.51.100.1/32 gateway=192.168.1.1 scope=10 \\
            comment="ecmpd isp-a check target"
        add dst-address=0.0.0.0/0 gateway=198.51.100.1 target-scope=11 \\
            check-gateway=ping pref-src=192.168.1.100 routing-table=isp-a \\
            comment="ecmpd isp-a default"
        add dst-address=192.168.1.0/24 gateway=eth0 pref-src=192.168.1.100 \\
            routing-table=isp-a comment="ecmpd isp-a connected"
        add dst-address=0.0.0.0/0 gateway=192.168.2.1 check-gateway=ping \\
            pref-src=192.168.2.100 routing-table=isp-b comment="ecmpd isp-b default"
        add dst-address=192.168.2.0/24 gateway=eth1 pref-src=192.168.2.100 \\
            routing-table=isp-b comment="ecmpd isp-b connected"
        # isp-a:isp-b weights 1:2 -> gateways repeated 1:2
        add dst-address=0.0.0.0/0 gateway=198.51.100.1,192.168.2.1,192.168.2.1 \\
            target-scope=11 check-gateway=ping routing-table=ecmp \\
            comment="ecmpd balancer"

        /routing rule
        # Appended after any rules already there: move them up (place-before=) if needed.
        add src-address=192.168.1.100/32 action=lookup-only-in-table table=isp-a \\
            comment="ecmpd reply:isp-a"
        add src-address=192.168.2.100/32 action=lookup-only-in-table table=isp-b \\
            comment="ecmpd reply:isp-b"
        add min-prefix=0 action=lookup-only-in-table table=main comment="ecmpd local"
        # vpn-laptop: non-strict pin: falls back to main while isp-a is down
        add src-address=192.168.10.50/32 action=lookup table=isp-a \\
            comment="ecmpd vpn-laptop"
        add dst-address=203.0.113.0/24 action=lookup-only-in-table table=main \\
            comment="ecmpd bank"
        # everything-else: when_all_down keep: falls back to main when every gateway fails
        add action=lookup table=ecmp comment="ecmpd everything-else"

        /ip firewall nat
        add chain=srcnat out-interface=eth0 action=masquerade comment="ecmpd isp-a"
    """)


def test_a_check_target_shared_by_every_uplink_falls_back_to_the_gateway() -> None:
    text = script(lab())
    assert "scope=10" not in text and "target-scope" not in text
    assert text.count("shared with another uplink") == 3
    assert "# isp-b: check method tcp:443: check-gateway only pings\n" in text
    assert (
        "# isp-a:isp-b:isp-c weights 2:4:1 -> gateways repeated 2:4:1\n"
        "add dst-address=0.0.0.0/0 \\\n"
        "    gateway=10.1.0.1,10.1.0.1,10.2.0.1,10.2.0.1,10.2.0.1,10.2.0.1,10.3.0.1 \\\n"
        '    check-gateway=ping routing-table=ecmp comment="ecmpd balancer"\n'
    ) in text


@pytest.mark.parametrize(
    ("weights", "counts", "exact"),
    [
        ([2, 4, 1], [2, 4, 1], True),
        ([100, 200, 50], [2, 4, 1], True),  # divided by their gcd
        ([100, 3], [15, 1], False),  # 16 gateways at most: the ratio is approximated
        ([256, 1], [15, 1], False),
        ([100, 3, 1, 1], [13, 1, 1, 1], False),
        ([1] * 20, [1] * 20, True),  # never below one each
    ],
)
def test_gateway_counts(weights: list[int], counts: list[int], exact: bool) -> None:
    assert routeros_routes.gateway_counts(weights) == (counts, exact)


def test_lost_precision_is_said_in_the_script() -> None:
    text = script(lab(weights=(200, 3, 1)))
    assert "# isp-a:isp-b:isp-c weights 200:3:1 -> gateways repeated 14:1:1\n" in text
    assert "# WARNING: ratios approximated: at most 16 gateways per route\n" in text


def test_rules_routeros_cannot_match_are_commented_out_with_the_reason() -> None:
    rules = """
      - {name: web, proto: tcp, dport: 443, iif: lan0, action: balance}
      - {name: marked, fwmark: 0x20, action: pin, uplink: isp-a, strict: true}
      - {name: guests, iif: lan1, action: pin, uplink: isp-c}
      - {name: rest, action: balance}"""
    text = script(lab(rules=rules, extra="    balancer: {when_all_down: unreachable}\n"))
    assert (
        textwrap.dedent("""\
        # web: RouterOS routing rules cannot match ipproto 6, dport 443; mark these packets
        # in /ip firewall mangle (action=mark-routing new-routing-mark=<table>) instead:
        # add interface=lan0 action=lookup-only-in-table table=ecmp comment="ecmpd web"
        # marked: RouterOS routing rules cannot match fwmark 0x20; mark these packets
        # in /ip firewall mangle (action=mark-routing new-routing-mark=<table>) instead:
        # add action=lookup-only-in-table table=isp-a comment="ecmpd marked"
        # guests: non-strict pin: falls back to main while isp-c is down
        add interface=lan1 action=lookup table=isp-c comment="ecmpd guests"
        add action=lookup-only-in-table table=ecmp comment="ecmpd rest"
    """)
        in text
    )


def test_hash_policies_and_router_mode_nat() -> None:
    assert "set ipv4-multipath-hash-policy=l3\n" in script(lab(extra="    hash: l3\n"))
    custom = script(lab(extra="    hash: [src-ip, dst-ip]\n    mode: router\n"))
    assert (
        "# custom hash fields [src-ip, dst-ip]: RouterOS has none; nearest: l3\n"
        "set ipv4-multipath-hash-policy=l3\n"
    ) in custom
    assert custom.count("action=masquerade") == 3


def test_an_uplink_named_like_a_builtin_table_gets_its_own_name() -> None:
    text = script("""
        uplinks:
          - {name: main, interface: wan-a, gateway: 10.1.0.1}
          - {name: ecmp, interface: wan-b, gateway: 10.2.0.1}
    """)
    assert 'add name=main-table fib comment="ecmpd uplink main (table 101)"\n' in text
    assert 'add name=ecmp-table fib comment="ecmpd uplink ecmp (table 102)"\n' in text


def test_point_to_point_and_dhcp_uplinks() -> None:
    facts = KernelFacts(
        interfaces={
            "ppp0": InterfaceFacts(
                "ppp0", 4, pointopoint=True, addresses=(ip_interface("100.64.9.9/32"),)
            ),
            "dhcp0": InterfaceFacts(
                "dhcp0",
                5,
                addresses=(ip_interface("10.5.0.77/24"),),
                dhcp_gateway=IPv4Address("10.5.0.1"),
            ),
            "dhcp1": InterfaceFacts("dhcp1", 6),
        }
    )
    text = script(
        """
        uplinks:
          - {name: lte, interface: ppp0, check: {targets: [192.0.2.9]}}
          - {name: cable, interface: dhcp0, gateway: dhcp}
          - {name: fiber, interface: dhcp1, gateway: dhcp}
    """,
        facts,
    )
    assert (
        "add dst-address=192.0.2.9/32 gateway=ppp0 scope=10 \\\n"
        '    comment="ecmpd lte check target"\n'
    ) in text
    assert "# cable: gateway from the DHCP lease at export time\n" in text
    assert "# fiber: no gateway known at export time (no DHCP lease?)\n" in text
    assert "gateway=192.0.2.9,10.5.0.1 target-scope=11 \\\n    check-gateway=ping" in text


def test_dual_stack_renders_both_families_in_the_same_tables() -> None:
    text = script(DUAL, FACTS6)
    header, _, body = text.partition("\n\n")
    assert "IPv6" not in header  # nothing left out to warn about
    assert body == textwrap.dedent("""\
        /ip settings
        set ipv4-multipath-hash-policy=l4

        /ipv6 settings
        set multipath-hash-policy=l4
        # cable: gateway6: ra: RouterOS learns the router from its
        # advertisements (into main); the uplink tables below keep the one known at
        # export time. This accepts advertisements on every interface: where RouterOS
        # has accept-router-advertisements-on=, narrow that to the uplinks.
        set accept-router-advertisements=yes

        /routing table
        add name=ecmp fib comment="ecmpd balancer (table 200)"
        add name=isp-a fib comment="ecmpd uplink isp-a (table 101)"
        add name=isp-b fib comment="ecmpd uplink isp-b (table 102)"
        add name=lte fib comment="ecmpd uplink lte (table 103)"
        add name=cable fib comment="ecmpd uplink cable (table 104)"

        /ip route
        add dst-address=0.0.0.0/0 gateway=10.1.0.1 check-gateway=ping \\
            pref-src=10.1.0.2 routing-table=isp-a comment="ecmpd isp-a default"
        add dst-address=10.1.0.0/24 gateway=wan-a pref-src=10.1.0.2 \\
            routing-table=isp-a comment="ecmpd isp-a connected"
        add dst-address=0.0.0.0/0 gateway=10.2.0.1 check-gateway=ping \\
            pref-src=10.2.0.2 routing-table=isp-b comment="ecmpd isp-b default"
        add dst-address=10.2.0.0/24 gateway=wan-b pref-src=10.2.0.2 \\
            routing-table=isp-b comment="ecmpd isp-b connected"
        add dst-address=0.0.0.0/0 gateway=10.4.0.1 check-gateway=ping \\
            pref-src=10.4.0.2 routing-table=cable comment="ecmpd cable default"
        add dst-address=10.4.0.0/24 gateway=ra0 pref-src=10.4.0.2 routing-table=cable \\
            comment="ecmpd cable connected"
        # isp-a:isp-b:cable weights 1:2:1 -> gateways repeated 1:2:1
        add dst-address=0.0.0.0/0 gateway=10.1.0.1,10.2.0.1,10.2.0.1,10.4.0.1 \\
            check-gateway=ping routing-table=ecmp comment="ecmpd balancer"

        /ipv6 route
        add dst-address=::/0 gateway=fe80::1%wan-a check-gateway=ping \\
            pref-src=2001:db8:1::2 routing-table=isp-a comment="ecmpd isp-a default"
        add dst-address=2001:db8:1::/64 gateway=wan-a pref-src=2001:db8:1::2 \\
            routing-table=isp-a comment="ecmpd isp-a connected"
        add dst-address=::/0 gateway=2001:db8:2::1 check-gateway=ping \\
            pref-src=2001:db8:2::2 routing-table=isp-b comment="ecmpd isp-b default"
        add dst-address=2001:db8:2::/64 gateway=wan-b pref-src=2001:db8:2::2 \\
            routing-table=isp-b comment="ecmpd isp-b connected"
        add dst-address=::/0 gateway=ppp6 pref-src=2001:db8:9::9 routing-table=lte \\
            comment="ecmpd lte default"
        # cable: IPv6 gateway from router advertisements at export time
        add dst-address=::/0 gateway=fe80::4%ra0 check-gateway=ping \\
            pref-src=2001:db8:4::77 routing-table=cable comment="ecmpd cable default"
        add dst-address=2001:db8:4::/64 gateway=ra0 pref-src=2001:db8:4::77 \\
            routing-table=cable comment="ecmpd cable connected"
        # isp-a:isp-b:lte:cable weights 1:2:1:1 -> gateways repeated 1:2:1:1
        add dst-address=::/0 \\
            gateway=fe80::1%wan-a,2001:db8:2::1,2001:db8:2::1,ppp6,fe80::4%ra0 \\
            check-gateway=ping routing-table=ecmp comment="ecmpd balancer"

        /routing rule
        # Appended after any rules already there: move them up (place-before=) if needed.
        # A rule without addresses serves IPv4 and IPv6 alike, as its tables do.
        add src-address=10.1.0.2/32 action=lookup-only-in-table table=isp-a \\
            comment="ecmpd reply:isp-a"
        add src-address=2001:db8:1::2/128 action=lookup-only-in-table table=isp-a \\
            comment="ecmpd reply:isp-a"
        add src-address=10.2.0.2/32 action=lookup-only-in-table table=isp-b \\
            comment="ecmpd reply:isp-b"
        add src-address=2001:db8:2::2/128 action=lookup-only-in-table table=isp-b \\
            comment="ecmpd reply:isp-b"
        add src-address=2001:db8:9::9/128 action=lookup-only-in-table table=lte \\
            comment="ecmpd reply:lte"
        add src-address=10.4.0.2/32 action=lookup-only-in-table table=cable \\
            comment="ecmpd reply:cable"
        add src-address=2001:db8:4::77/128 action=lookup-only-in-table table=cable \\
            comment="ecmpd reply:cable"
        add min-prefix=0 action=lookup-only-in-table table=main comment="ecmpd local"
        # v6-pin: non-strict pin: falls back to main while isp-b is down
        add src-address=2001:db8:77::/48 action=lookup table=isp-b \\
            comment="ecmpd v6-pin"
        add dst-address=2001:db8:88::/48 action=lookup-only-in-table table=main \\
            comment="ecmpd v6-bank"
        # everything-else: when_all_down keep: falls back to main when every gateway fails
        add action=lookup table=ecmp comment="ecmpd everything-else"
    """)


def test_ipv6_check_targets_beyond_the_gateway_take_the_recursive_recipe() -> None:
    text = script(
        """
        uplinks:
          - {name: isp-a, interface: wan-a, gateway6: "fe80::1", source6: "2001:db8:1::2",
             check: {targets: ["fe80::1", "2001:db8:100::1", "2001:db8:100::9"]}}
          - {name: isp-b, interface: wan-b, gateway6: "2001:db8:2::1",
             check: {targets: ["2001:db8:100::9"], method: "tcp:443"}}
    """,
        FACTS6,
    )
    assert "/ip route" not in text  # IPv6 alone: no IPv4 to route
    assert (
        "# isp-a: checked through 2001:db8:100::1 by a recursive route; the host route\n"
        "# to it, in main, also sends the router's own traffic to it that way.\n"
        "# isp-a: RouterOS follows one target of 2001:db8:100::1, 2001:db8:100::9\n"
        "add dst-address=2001:db8:100::1/128 gateway=fe80::1%wan-a scope=10 \\\n"
        '    comment="ecmpd isp-a check target"\n'
        "add dst-address=::/0 gateway=2001:db8:100::1 target-scope=11 \\\n"
        "    check-gateway=ping pref-src=2001:db8:1::2 routing-table=isp-a \\\n"
        '    comment="ecmpd isp-a default"\n'
    ) in text
    # Said in the only section isp-b has: its IPv6 one.
    assert (
        "# isp-b: check targets 2001:db8:100::9 shared with another uplink, and a host\n"
        "# route leads out of one only: check-gateway pings the gateway instead\n"
        "# isp-b: check method tcp:443: check-gateway only pings\n"
    ) in text
    assert "gateway=2001:db8:100::1,2001:db8:2::1 target-scope=11" in text


def test_a_learned_ipv6_gateway_not_known_yet_is_said_and_left_out() -> None:
    facts = KernelFacts(
        interfaces={**FACTS6.interfaces, "ra0": InterfaceFacts("ra0", 104)}  # no router yet
    )
    text = script(
        """
        uplinks:
          - {name: isp-b, interface: wan-b, gateway: 10.2.0.1, gateway6: "2001:db8:2::1"}
          - {name: cable, interface: ra0, gateway6: ra}
    """,
        facts,
    )
    ip_routes = text.split("/ip route")[1].split("/ipv6 route")[0]
    assert "cable" not in ip_routes  # carries no IPv4: nothing to say there
    assert "# cable: no IPv6 gateway known at export time (no router advertisement?)\n" in text
    # The IPv6 balanced route has isp-b alone.
    assert (
        "# cable: no IPv6 gateway known at export time (no router advertisement?)\n"
        "# isp-b weights 1 -> gateways repeated 1\n"
        "add dst-address=::/0 gateway=2001:db8:2::1 check-gateway=ping \\\n"
        '    routing-table=ecmp comment="ecmpd balancer"\n'
    ) in text


def test_an_address_less_rule_of_both_families_is_one_routeros_rule() -> None:
    # A strict pin to an uplink without IPv6: ecmpd's IPv6 rule refuses; RouterOS's
    # one rule looks up a table holding no IPv6 route, which refuses just the same.
    text = script(
        """
        mode: router
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: 10.1.0.1}
          - {name: lte, interface: ppp6, source6: "2001:db8:9::9"}
        rules:
          - {name: pinned, iif: lan0, action: pin, uplink: isp-a, strict: true}
          - {name: rest, action: balance}
    """,
        FACTS6,
    )
    rules = text.split("/routing rule")[1]
    assert rules.count("ecmpd pinned") == 1 and rules.count("ecmpd rest") == 1
    assert (
        "add interface=lan0 action=lookup-only-in-table table=isp-a \\\n"
        '    comment="ecmpd pinned"\n'
    ) in rules
    assert "action=unreachable" not in rules
    # No NAT66: the IPv6-only uplink gets no masquerade.
    assert text.endswith(
        "/ip firewall nat\n"
        'add chain=srcnat out-interface=wan-a action=masquerade comment="ecmpd isp-a"\n'
    )
