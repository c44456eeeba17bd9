"""check_against_kernel with hand-built KernelFacts: one test per way a config can misfit.

What the kernel only does not have yet (an interface, a lease, an address of the
family) is a warning (warnings_against_kernel), everything else an error.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from textwrap import dedent

from ecmpd.config import Config, check_against_kernel, parse_config, warnings_against_kernel
from ecmpd.facts import InterfaceFacts, KernelFacts, MainDefault
from ecmpd.model import NH_ID_BASE, Family

CONFIG = """\
uplinks:
  - name: isp-a
    interface: eth0
    gateway: 192.168.1.1
    source: 192.168.1.100
  - name: isp-b
    interface: eth1
    gateway: dhcp
  - name: isp-c
    interface: eth2
    gateway6: 2001:db8:2::1
    source6: 2001:db8:2::10
  - name: ppp
    interface: ppp0
    gateway: 10.64.64.64
    table: 150
rules:
  - name: lan
    action: balance
    iif: br-lan
"""


HOLDS = "; ecmpd run holds the uplink down until then"


def config(text: str = CONFIG) -> Config:
    return parse_config(dedent(text), "ecmpd.yaml")


def eth0(*addresses: str) -> InterfaceFacts:
    return InterfaceFacts(
        "eth0", 2, addresses=tuple(IPv4Interface(a) for a in addresses or ("192.168.1.100/24",))
    )


def healthy() -> dict[str, InterfaceFacts]:
    """Interfaces on which CONFIG fits."""
    return {
        "lo": InterfaceFacts("lo", 1, addresses=(IPv4Interface("127.0.0.1/8"),)),
        "eth0": eth0(),
        "eth1": InterfaceFacts(
            "eth1",
            3,
            addresses=(IPv4Interface("10.0.2.15/24"),),
            dhcp_gateway=IPv4Address("10.0.2.2"),
        ),
        "eth2": InterfaceFacts(
            "eth2",
            4,
            addresses=(IPv6Interface("fe80::2/64"), IPv6Interface("2001:db8:2::10/64")),
        ),
        # The peer of a point-to-point link is in no prefix of ours, and needs not be.
        "ppp0": InterfaceFacts(
            "ppp0", 5, pointopoint=True, addresses=(IPv4Interface("100.64.1.7/32"),)
        ),
        "br-lan": InterfaceFacts("br-lan", 6, addresses=(IPv4Interface("192.168.10.1/24"),)),
    }


def issues(facts: KernelFacts, text: str = CONFIG) -> list[str]:
    """Errors and warnings, errors first."""
    errors = check_against_kernel(config(text), facts)
    warnings = warnings_against_kernel(config(text), facts)
    assert all(w.warning for w in warnings) and not any(e.warning for e in errors)
    return [str(issue) for issue in [*errors, *warnings]]


def with_interface(iface: InterfaceFacts) -> KernelFacts:
    return KernelFacts(interfaces={**healthy(), iface.name: iface})


def test_fitting_kernel_has_no_issues() -> None:
    assert issues(KernelFacts(interfaces=healthy())) == []


def test_missing_interface_with_suggestion() -> None:
    interfaces = healthy()
    interfaces["eth10"] = interfaces.pop("eth1")
    assert issues(KernelFacts(interfaces=interfaces)) == [
        "ecmpd.yaml:7: uplinks[1].interface: warning: no interface 'eth1' yet (did you mean "
        f"'eth10'?){HOLDS}"
    ]


def test_missing_interface_without_suggestion() -> None:
    interfaces = healthy()
    del interfaces["ppp0"]
    assert issues(KernelFacts(interfaces=interfaces)) == [
        f"ecmpd.yaml:14: uplinks[3].interface: warning: no interface 'ppp0' yet{HOLDS}"
    ]


def test_gateway_outside_the_interface_prefixes() -> None:
    facts = with_interface(eth0("192.168.5.100/24", "10.1.1.1/16"))
    assert issues(facts, CONFIG.replace("source: 192.168.1.100", "source: 192.168.5.100")) == [
        "ecmpd.yaml:4: uplinks[0].gateway: 192.168.1.1 is not in any prefix of eth0 "
        "(192.168.5.100/24, 10.1.1.1/16)"
    ]


def test_gateway_on_interface_without_ipv4() -> None:
    facts = with_interface(InterfaceFacts("eth0", 2))
    # No IPv4 address yet (a tunnel not connected, DHCP pending): warnings.
    assert issues(facts) == [
        "ecmpd.yaml:4: uplinks[0].gateway: warning: 192.168.1.1 is not in any prefix of eth0 "
        f"(no IPv4 address){HOLDS}",
        "ecmpd.yaml:5: uplinks[0].source: warning: 192.168.1.100 is not an address of eth0 "
        f"(it has no IPv4 address){HOLDS}",
    ]


def test_gateway_on_pointopoint_interface_is_not_checked() -> None:
    facts = with_interface(InterfaceFacts("eth0", 2, pointopoint=True, addresses=eth0().addresses))
    assert issues(facts, CONFIG.replace("gateway: 192.168.1.1", "gateway: 203.0.113.1")) == []


def test_ipv6_gateway_outside_prefixes() -> None:
    eth2 = InterfaceFacts(
        "eth2", 4, addresses=(IPv6Interface("fe80::2/64"), IPv6Interface("2001:db8:2::10/64"))
    )
    text = CONFIG.replace("gateway6: 2001:db8:2::1", "gateway6: 2001:db8:9::1")
    assert issues(with_interface(eth2), text) == [
        "ecmpd.yaml:11: uplinks[2].gateway6: 2001:db8:9::1 is not in any prefix of eth2 "
        "(fe80::2/64, 2001:db8:2::10/64)"
    ]


def test_link_local_ipv6_gateway_is_always_on_link() -> None:
    text = CONFIG.replace("gateway6: 2001:db8:2::1", "gateway6: fe80::1")
    assert issues(KernelFacts(interfaces=healthy()), text) == []


def test_source_not_on_the_interface() -> None:
    text = CONFIG.replace("source: 192.168.1.100", "source: 192.168.1.7")
    assert issues(KernelFacts(interfaces=healthy()), text) == [
        "ecmpd.yaml:5: uplinks[0].source: 192.168.1.7 is not an address of eth0 "
        "(it has 192.168.1.100)"
    ]


def test_source6_not_on_the_interface() -> None:
    text = CONFIG.replace("source6: 2001:db8:2::10", "source6: 2001:db8:2::11")
    assert issues(KernelFacts(interfaces=healthy()), text) == [
        "ecmpd.yaml:12: uplinks[2].source6: 2001:db8:2::11 is not an address of eth2 "
        "(it has fe80::2, 2001:db8:2::10)"
    ]


def test_dhcp_gateway_without_dhcp_route() -> None:
    facts = with_interface(InterfaceFacts("eth1", 3, addresses=(IPv4Interface("10.0.2.15/24"),)))
    assert issues(facts) == [
        f"ecmpd.yaml:8: uplinks[1].gateway: warning: eth1 has no DHCP lease yet{HOLDS}"
    ]


def test_foreign_rules_inside_the_priority_block() -> None:
    facts = KernelFacts(
        interfaces=healthy(),
        foreign_rule_priorities=frozenset(
            {
                (Family.INET, 0),
                (Family.INET, 9999),
                (Family.INET, 10000),
                (Family.INET6, 10500),
                (Family.INET, 10500),
                (Family.INET, 10999),
                (Family.INET, 11000),
                (Family.INET, 32766),
            }
        ),
    )
    assert issues(facts) == [
        "ecmpd.yaml: rule_priority: ecmpd needs priorities 10000-10999, but rules it does not "
        "own use 10000 (IPv4), 10500 (IPv4 and IPv6), 10999 (IPv4)"
    ]


def test_foreign_rules_outside_a_moved_block() -> None:
    facts = KernelFacts(
        interfaces=healthy(), foreign_rule_priorities=frozenset({(Family.INET6, 10500)})
    )
    assert issues(facts, "rule_priority: 20000\n" + CONFIG) == []
    assert issues(facts, "rule_priority: 9600\n" + CONFIG) == [
        "ecmpd.yaml:1: rule_priority: ecmpd needs priorities 9600-10599, but rules it does not "
        "own use 10500 (IPv6)"
    ]


def test_foreign_routes_in_our_tables() -> None:
    facts = KernelFacts(interfaces=healthy(), foreign_tables=frozenset({101, 150, 200, 254}))
    assert issues(facts) == [
        "ecmpd.yaml: balancer.table: table 200 already holds routes ecmpd did not create",
        # isp-a's table 101 was allocated, so the line is the uplink's own.
        "ecmpd.yaml:2: uplinks[0].table: table 101 already holds routes ecmpd did not create",
        "ecmpd.yaml:16: uplinks[3].table: table 150 already holds routes ecmpd did not create",
    ]


def test_foreign_nexthop_ids() -> None:
    facts = KernelFacts(
        interfaces=healthy(),
        foreign_nexthop_ids=frozenset({NH_ID_BASE + 102, NH_ID_BASE + 200, 1, NH_ID_BASE + 7}),
    )
    assert issues(facts, "balancer:\n  table: 300\n" + CONFIG) == [
        f"ecmpd.yaml:8: uplinks[1].table: nexthop id {NH_ID_BASE + 102} (ecmpd's for table 102) "
        "is taken by a foreign nexthop"
    ]
    assert issues(facts) == [
        f"ecmpd.yaml: balancer.table: nexthop id {NH_ID_BASE + 200} (ecmpd's for table 200) "
        "is taken by a foreign nexthop",
        f"ecmpd.yaml:6: uplinks[1].table: nexthop id {NH_ID_BASE + 102} (ecmpd's for table 102) "
        "is taken by a foreign nexthop",
    ]


def test_rule_iif_missing() -> None:
    interfaces = healthy()
    interfaces["br-lan0"] = interfaces.pop("br-lan")
    assert issues(KernelFacts(interfaces=interfaces)) == [
        "ecmpd.yaml:20: rules[0].iif: no interface 'br-lan'; did you mean 'br-lan0'?"
    ]


def test_every_issue_at_once_in_file_order() -> None:
    interfaces = healthy()
    del interfaces["eth0"], interfaces["br-lan"]
    interfaces["eth1"] = InterfaceFacts("eth1", 3)
    facts = KernelFacts(
        interfaces=interfaces,
        foreign_rule_priorities=frozenset({(Family.INET, 10001)}),
        foreign_tables=frozenset({150}),
    )
    assert issues(facts) == [
        "ecmpd.yaml: rule_priority: ecmpd needs priorities 10000-10999, but rules it does not "
        "own use 10001 (IPv4)",
        "ecmpd.yaml:16: uplinks[3].table: table 150 already holds routes ecmpd did not create",
        "ecmpd.yaml:20: rules[0].iif: no interface 'br-lan'",
        "ecmpd.yaml:3: uplinks[0].interface: warning: no interface 'eth0' yet (did you mean "
        f"'eth1'?){HOLDS}",
        f"ecmpd.yaml:8: uplinks[1].gateway: warning: eth1 has no DHCP lease yet{HOLDS}",
    ]


def test_issues_carry_the_config_file_name() -> None:
    facts = KernelFacts(interfaces={})
    found = check_against_kernel(parse_config(dedent(CONFIG), "/etc/ecmpd/ecmpd.yaml"), facts)
    assert {issue.file for issue in found} == {"/etc/ecmpd/ecmpd.yaml"}
    assert [issue.field for issue in found] == ["rules[0].iif"]
    warned = warnings_against_kernel(parse_config(dedent(CONFIG), "/etc/ecmpd/ecmpd.yaml"), facts)
    assert {issue.file for issue in warned} == {"/etc/ecmpd/ecmpd.yaml"}
    assert [issue.field for issue in warned] == [f"uplinks[{i}].interface" for i in range(4)]


EDGE = """\
uplinks:
  - {name: isp-a, interface: eth0, gateway: 192.168.1.1, gateway6: "fe80::1"}
announce:
  table: 150
  table6: main
"""


def shadows(*defaults: MainDefault, text: str = EDGE) -> list[str]:
    facts = KernelFacts(interfaces=healthy(), main_defaults=defaults)
    return issues(facts, text)


def default4(protocol: int, metric: int = 0) -> MainDefault:
    return MainDefault(Family.INET, protocol, metric, IPv4Address("192.168.1.254"), "eth0")


def default6(protocol: int, metric: int) -> MainDefault:
    return MainDefault(Family.INET6, protocol, metric, IPv6Address("fe80::1"), "eth0")


def test_another_default_in_main_would_shadow_the_imported_announce_route() -> None:
    # A DHCP client's (or a hand-made, or FRR's static) default beats the import (15).
    for protocol, name in ((16, "dhcp"), (3, "boot"), (196, "FRR static")):
        (warning,) = shadows(default4(protocol, metric=1000))
        assert warning == (
            "ecmpd.yaml:4: announce.table: warning: the IPv4 default route via 192.168.1.254 dev"
            f" eth0 (proto {name}, metric 1000) in the main table would shadow the announce"
            " route (imported) in FRR's zebra: FRR would announce it, or nothing, instead; keep"
            " main free of other default routes on an edge"
        )


def test_in_main_only_a_lower_or_equal_metric_shadows() -> None:
    (warning,) = shadows(default6(9, 100), default6(9, 1024), default6(196, 10))
    assert warning.startswith("ecmpd.yaml:5: announce.table6: warning: the IPv6 default route")
    assert "(proto ra, metric 100)" in warning and "(in main)" in warning


def test_no_warning_for_a_family_not_announced_or_not_carried() -> None:
    assert (
        shadows(default6(9, 100), text=EDGE.replace("table6: main", "min_uplinks: {ipv4: 1}")) == []
    )
    v4_only = EDGE.replace(', gateway6: "fe80::1"', "")
    assert shadows(default6(9, 100), text=v4_only) == []
    assert (
        shadows(default4(16), text=EDGE.replace("announce:\n  table: 150\n  table6: main\n", ""))
        == []
    )
