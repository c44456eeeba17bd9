"""Golden: YAML config in -> systemd-networkd `.network` files out, parsed back."""

from __future__ import annotations

import textwrap

from ecmpd.config import parse_config
from ecmpd.export import networkd
from ecmpd.export.render import config_facts, join
from ecmpd.facts import InterfaceFacts, KernelFacts
from tests.golden.fixtures import DUAL, FACTS6, LAB, networkd_files

EVERY_KIND = """
    balancer: {group: hash-threshold}
    uplinks:
      - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, weight: 3}
      - {name: lte, interface: ppp0}
      - {name: cable, interface: dhcp0, gateway: dhcp}
    rules:
      - {name: local, action: bypass}
      - {name: vpn, from: 192.0.2.50, action: pin, uplink: lte}
      - {name: bank, to: 203.0.113.0/24, action: main}
      - {name: web, proto: tcp, dport: 443, sport: 1024-65535, iif: lan0, action: balance}
      - {name: masked, fwmark: 0x20/0xf0, action: main}
      - {name: rest, action: balance}
"""

Section = tuple[str, list[tuple[str, str]]]

NETWORK_NOTE = """\
    [Network]
    # networkd applies only the first .network file (in lexical order) matching a
    # link; this one sorts early and takes the link over, so it carries its addresses.
    # To keep your own file instead, copy the sections below [Network] into a drop-in
    # of it (/etc/systemd/network/<your file>.network.d/ecmpd.conf).
"""


def parse(text: str) -> list[Section]:
    """A .network file as (section, [(key, value)]), duplicates and order kept."""
    parsed: list[Section] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            parsed.append((line[1:-1], []))
        else:
            key, _, value = line.partition("=")
            parsed[-1][1].append((key, value))
    return parsed


def test_the_lab_config() -> None:
    out = networkd_files(LAB)
    note = textwrap.indent(textwrap.dedent(NETWORK_NOTE), "    ")
    assert join(out) == textwrap.dedent(
        """\
        # --- FILE: 10-ecmpd-wan-a.network ---
        # ecmpd export --format networkd: uplink isp-a (wan-a) of lab.yaml,
        # for /etc/systemd/network/. Static: no health checks and no failover; for those
        # run `ecmpd run` instead (it owns rule priorities 10000-10999: do not use both).
        # This first file also holds what belongs to no single link (the balanced
        # route, and the rules that do not look up an uplink's table).
        # networkd cannot set sysctls: put these in /etc/sysctl.d/90-ecmpd.conf:
        #   net.ipv4.conf.wan-a.rp_filter = 2
        #   net.ipv4.conf.wan-b.rp_filter = 2
        #   net.ipv4.fib_multipath_hash_policy = 1

        [Match]
        Name=wan-a

        {NETWORK}Address=10.1.0.2/24

        [Route]
        # uplink table 101: default route
        Destination=0.0.0.0/0
        Gateway=10.1.0.1
        PreferredSource=10.1.0.2
        Table=101

        [Route]
        # uplink table 101: connected prefix
        Destination=10.1.0.0/24
        PreferredSource=10.1.0.2
        Scope=link
        Table=101

        [Route]
        # balancer (table 200): the weighted default route
        Destination=0.0.0.0/0
        # ecmpd uses a resilient nexthop group (512 buckets); networkd has
        # none, so a member change here rehashes flows (hash-threshold multipath).
        MultiPathRoute=10.1.0.1@wan-a 1
        MultiPathRoute=10.2.0.1@wan-b 2
        Table=200

        [RoutingPolicyRule]
        # reply:isp-a
        From=10.1.0.2
        Table=101
        Priority=10000

        [RoutingPolicyRule]
        # local
        Table=main
        Priority=10100
        SuppressPrefixLength=0

        [RoutingPolicyRule]
        # everything-else
        Table=200
        Priority=10110

        # --- FILE: 10-ecmpd-wan-b.network ---
        # ecmpd export --format networkd: uplink isp-b (wan-b) of lab.yaml,
        # for /etc/systemd/network/. Static: no health checks and no failover; for those
        # run `ecmpd run` instead (it owns rule priorities 10000-10999: do not use both).

        [Match]
        Name=wan-b

        {NETWORK}Address=10.2.0.2/24

        [Route]
        # uplink table 102: default route
        Destination=0.0.0.0/0
        Gateway=10.2.0.1
        PreferredSource=10.2.0.2
        Table=102

        [Route]
        # uplink table 102: connected prefix
        Destination=10.2.0.0/24
        PreferredSource=10.2.0.2
        Scope=link
        Table=102

        [RoutingPolicyRule]
        # reply:isp-b
        From=10.2.0.2
        Table=102
        Priority=10001
        """
    ).replace("{NETWORK}", textwrap.dedent(note))


def test_every_rule_kind_parses_back() -> None:
    out = networkd_files(EVERY_KIND)
    assert list(out) == [
        "10-ecmpd-wan-a.network",
        "10-ecmpd-ppp0.network",
        "10-ecmpd-dhcp0.network",
    ]
    wan_a = parse(out["10-ecmpd-wan-a.network"])
    assert [name for name, _ in wan_a] == [
        "Match", "Network", "Route", "Route", "Route",
        "RoutingPolicyRule", "RoutingPolicyRule", "RoutingPolicyRule", "RoutingPolicyRule",
        "RoutingPolicyRule", "RoutingPolicyRule",
    ]  # fmt: skip
    assert wan_a[1] == ("Network", [("Address", "10.1.0.2/24")])  # link-local left out
    # A point-to-point member has no gateway for MultiPathRoute=: said, and left out.
    assert wan_a[4] == (
        "Route",
        [
            ("Destination", "0.0.0.0/0"),
            ("MultiPathRoute", "10.1.0.1@wan-a 3"),
            ("MultiPathRoute", "10.5.0.1@dhcp0 1"),
            ("Table", "200"),
        ],
    )
    assert (
        "# ppp0 (weight 1) left out, MultiPathRoute= needs a gateway"
        in out["10-ecmpd-wan-a.network"]
    )
    assert "resilient" not in out["10-ecmpd-wan-a.network"]  # hash-threshold: no caveat
    rules = [dict(keys) for name, keys in wan_a if name == "RoutingPolicyRule"]
    assert rules == [
        {"From": "10.1.0.2", "Table": "101", "Priority": "10000"},
        {"Table": "main", "Priority": "10100", "SuppressPrefixLength": "0"},
        {"To": "203.0.113.0/24", "Table": "main", "Priority": "10120"},
        {
            "IncomingInterface": "lan0",
            "IPProtocol": "tcp",
            "SourcePort": "1024-65535",
            "DestinationPort": "443",
            "Table": "200",
            "Priority": "10130",
        },
        {"FirewallMark": "32/240", "Table": "main", "Priority": "10140"},
        {"Table": "200", "Priority": "10150"},
    ]
    ppp0 = parse(out["10-ecmpd-ppp0.network"])
    assert ppp0[2:] == [
        (
            "Route",
            [
                ("Destination", "0.0.0.0/0"),
                ("PreferredSource", "100.64.9.9"),
                ("Scope", "link"),
                ("Table", "102"),
            ],
        ),
        ("RoutingPolicyRule", [("From", "100.64.9.9"), ("Table", "102"), ("Priority", "10001")]),
        ("RoutingPolicyRule", [("From", "192.0.2.50"), ("Table", "102"), ("Priority", "10110")]),
    ]
    dhcp0 = parse(out["10-ecmpd-dhcp0.network"])
    # The lease's address is networkd's DHCP client's business, not a static Address=.
    assert dhcp0[1] == ("Network", [("DHCP", "ipv4")])
    # The uplink table's default follows the lease, as ecmpd does (systemd.network(5)).
    assert ("Gateway", "_dhcp4") in dhcp0[2][1]
    assert (
        "# gateway: dhcp: the lease's gateway (10.5.0.1 at export time)"
        in out["10-ecmpd-dhcp0.network"]
    )


def test_a_dhcp_uplink_without_a_lease_still_gets_its_tables_default() -> None:
    text = """
        uplinks:
          - {name: cable, interface: dhcp0, gateway: dhcp}
    """
    facts = KernelFacts(interfaces={"dhcp0": InterfaceFacts("dhcp0", 5)})
    routes = routes_of(networkd_files(text, facts)["10-ecmpd-dhcp0.network"])
    assert {"Destination": "0.0.0.0/0", "Gateway": "_dhcp4", "Table": "101"} in routes


def test_without_the_kernel_the_address_is_left_to_the_reader() -> None:
    config = parse_config(textwrap.dedent(LAB), "lab.yaml")
    out = networkd.files(config, config_facts(config))
    wan_a = out["10-ecmpd-wan-a.network"]
    assert "# Address= unknown (exported without reading the kernel): add wan-a's.\n" in wan_a
    assert "Address=10.1.0.2/32" not in wan_a
    # No prefix known: no connected route, but the default route and reply rule stay.
    assert [name for name, _ in parse(wan_a)].count("Route") == 2
    assert ("From", "10.1.0.2") in parse(wan_a)[4][1]


def rules_of(text: str) -> list[dict[str, str]]:
    return [dict(keys) for name, keys in parse(text) if name == "RoutingPolicyRule"]


def routes_of(text: str) -> list[dict[str, str]]:
    return [dict(keys) for name, keys in parse(text) if name == "Route"]


def test_dual_stack_rules_without_addresses_serve_both_families() -> None:
    out = networkd_files(DUAL, FACTS6)
    assert list(out) == [
        "10-ecmpd-wan-a.network",
        "10-ecmpd-wan-b.network",
        "10-ecmpd-ppp6.network",
        "10-ecmpd-ra0.network",
    ]
    # networkd takes a rule without From=/To= for IPv4 alone: Family=both gives it to
    # IPv6 as well, as ecmpd does (reply rules and v6-bank have addresses to tell).
    assert rules_of(out["10-ecmpd-wan-a.network"]) == [
        {"From": "10.1.0.2", "Table": "101", "Priority": "10000"},
        {"From": "2001:db8:1::2", "Table": "101", "Priority": "10000"},
        {"Family": "both", "Table": "main", "Priority": "10100", "SuppressPrefixLength": "0"},
        {"To": "2001:db8:88::/48", "Table": "main", "Priority": "10120"},
        {"Family": "both", "Table": "200", "Priority": "10130"},
    ]
    assert rules_of(out["10-ecmpd-wan-b.network"])[-1] == {
        "From": "2001:db8:77::/48",
        "Table": "102",
        "Priority": "10110",
    }


def test_ipv6_routes_for_each_kind_of_gateway() -> None:
    out = networkd_files(DUAL, FACTS6)
    wan_a = routes_of(out["10-ecmpd-wan-a.network"])
    # A link-local gateway needs no GatewayOnLink: the .network file names the link.
    assert wan_a[1] == {
        "Destination": "::/0",
        "Gateway": "fe80::1",
        "PreferredSource": "2001:db8:1::2",
        "Metric": "1024",
        "Table": "101",
    }
    assert wan_a[5] == {
        "Destination": "::/0",
        "MultiPathRoute": "fe80::4@ra0 1",  # the dict keeps the last of them
        "Metric": "1024",
        "Table": "200",
    }
    multipath = [v for k, v in parse(out["10-ecmpd-wan-a.network"])[7][1] if k == "MultiPathRoute"]
    assert multipath == ["fe80::1@wan-a 1", "2001:db8:2::1@wan-b 2", "fe80::4@ra0 1"]
    assert (
        "# ppp6 (weight 1) left out, MultiPathRoute= needs a gateway"
        in out["10-ecmpd-wan-a.network"]
    )
    # Point-to-point without a gateway: a device route.
    assert routes_of(out["10-ecmpd-ppp6.network"]) == [
        {
            "Destination": "::/0",
            "PreferredSource": "2001:db8:9::9",
            "Metric": "1024",
            "Table": "103",
        }
    ]


def test_gateway6_ra_accepts_advertisements_and_follows_the_router() -> None:
    ra0 = networkd_files(DUAL, FACTS6)["10-ecmpd-ra0.network"]
    sections = parse(ra0)
    # Its IPv6 address comes by SLAAC: not written as a static one.
    assert sections[1] == ("Network", [("IPv6AcceptRA", "yes"), ("Address", "10.4.0.2/24")])
    assert routes_of(ra0)[1] == {
        "Destination": "::/0",
        "Gateway": "_ipv6ra",
        "PreferredSource": "2001:db8:4::77",
        "Metric": "1024",
        "Table": "104",
    }
    assert "# gateway6: ra: the advertised router (fe80::4 at export time)\n" in ra0
    # MultiPathRoute= takes addresses only: the router of export time, said so.
    first = networkd_files(DUAL, FACTS6)["10-ecmpd-wan-a.network"]
    assert (
        "# ra0: the router advertised at export time (no _ipv6ra here)\n"
        "MultiPathRoute=fe80::4@ra0 1\n"
    ) in first


def test_gateway6_ra_without_a_router_at_export_time_still_gets_its_route() -> None:
    config = parse_config(
        textwrap.dedent("""
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: 10.1.0.1}
          - {name: cable, interface: ra0, gateway6: ra, source6: "2001:db8:4::77"}
    """),
        "lab.yaml",
    )
    out = networkd.files(config, config_facts(config))  # offline: no router known
    ra0 = out["10-ecmpd-ra0.network"]
    assert routes_of(ra0) == [
        {
            "Destination": "::/0",
            "Gateway": "_ipv6ra",
            "PreferredSource": "2001:db8:4::77",
            "Metric": "1024",
            "Table": "102",
        }
    ]
    assert "# gateway6: ra: the advertised router\n" in ra0
    assert "@ra0" not in out["10-ecmpd-wan-a.network"]  # no router to balance over yet


def test_an_ipv6_rule_unlike_its_ipv4_twin_keeps_its_own_section() -> None:
    # A strict pin to an uplink without IPv6 refuses IPv6 instead of looking it up.
    out = networkd_files(
        """
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: 10.1.0.1}
          - {name: lte, interface: ppp6, source6: "2001:db8:9::9"}
        rules:
          - {name: pinned, iif: lan0, action: pin, uplink: isp-a, strict: true}
    """,
        FACTS6,
    )
    pinned = [r for r in rules_of(out["10-ecmpd-wan-a.network"]) if r["Priority"] == "10100"]
    assert pinned == [
        {"IncomingInterface": "lan0", "Table": "101", "Priority": "10100"},
        {"Family": "ipv6", "IncomingInterface": "lan0", "Type": "unreachable", "Priority": "10100"},
    ]
