"""Cross-field checks: YAML in, the exact `file:line: field: message` lines out."""

from __future__ import annotations

from textwrap import dedent

import pytest

from ecmpd.config import ConfigError, parse_config


def errors(text: str) -> list[str]:
    """The rendered issues of a config that must not load."""
    with pytest.raises(ConfigError) as caught:
        parse_config(dedent(text), "ecmpd.yaml")
    return [str(issue) for issue in caught.value.issues]


TWO_UPLINKS = """\
uplinks:
  - name: isp-a
    interface: eth0
  - name: isp-b
    interface: eth1
"""


def rule_errors(rules: str) -> list[str]:
    """The issues of two plain uplinks (lines 1-5) followed by `rules` from line 6 on."""
    return errors(TWO_UPLINKS + dedent(rules))


def test_duplicate_uplink_name() -> None:
    assert errors("""\
        uplinks:
          - name: isp-a
            interface: eth0
          - name: isp-a
            interface: eth1
        """) == ["ecmpd.yaml:4: uplinks[1].name: duplicate uplink name 'isp-a' (also uplinks[0])"]


def test_duplicate_interface() -> None:
    assert errors("""\
        uplinks:
          - name: isp-a
            interface: eth0
          - name: isp-b
            interface: eth0
        """) == [
        "ecmpd.yaml:5: uplinks[1].interface: interface 'eth0' is already used by uplink 'isp-a'"
    ]


def test_duplicate_table() -> None:
    assert errors("""\
        uplinks:
          - name: isp-a
            interface: eth0
            table: 150
          - name: isp-b
            interface: eth1
            table: 150
        """) == ["ecmpd.yaml:7: uplinks[1].table: table 150 is already used by uplink 'isp-a'"]


def test_uplink_table_is_balancer_table() -> None:
    assert errors("""\
        balancer:
          table: 101
        uplinks:
          - name: isp-a
            interface: eth0
            table: 101
        """) == ["ecmpd.yaml:6: uplinks[0].table: table 101 is already the balancer table"]


def test_uplink_table_is_default_balancer_table() -> None:
    assert errors("""\
        uplinks:
          - name: isp-a
            interface: eth0
            table: 200
        """) == ["ecmpd.yaml:4: uplinks[0].table: table 200 is already the balancer table"]


def test_weight_and_bandwidth_both() -> None:
    assert errors("""\
        uplinks:
          - name: isp-a
            interface: eth0
            bandwidth: 100Mbit
            weight: 2
        """) == ["ecmpd.yaml:5: uplinks[0].weight: give weight or bandwidth, not both"]


def test_bandwidth_mixed_with_weight_and_with_nothing() -> None:
    assert errors("""\
        uplinks:
          - name: isp-a
            interface: eth0
            bandwidth: 100Mbit
          - name: isp-b
            interface: eth1
            weight: 2
          - name: isp-c
            interface: eth2
        """) == [
        "ecmpd.yaml:7: uplinks[1].weight: 'isp-a' has a bandwidth, so every uplink needs one "
        "(weights are then derived from them)",
        "ecmpd.yaml:8: uplinks[2].bandwidth: 'isp-a' has a bandwidth, so every uplink needs one "
        "(weights are then derived from them)",
    ]


def test_min_up_above_targets() -> None:
    assert errors("""\
        uplinks:
          - name: isp-a
            interface: eth0
            check:
              targets: [1.1.1.1, 8.8.8.8]
              min_up: 3
        """) == ["ecmpd.yaml:6: uplinks[0].check.min_up: 3 is more than the number of targets (2)"]


def test_min_up_counts_the_gateway_as_one_target() -> None:
    assert errors("""\
        uplinks:
          - name: isp-a
            interface: eth0
            gateway: 192.168.1.1
            check:
              min_up: 2
        """) == ["ecmpd.yaml:6: uplinks[0].check.min_up: 2 is more than the number of targets (1)"]


def test_duplicate_target() -> None:
    assert errors("""\
        uplinks:
          - name: isp-a
            interface: eth0
            check:
              targets:
                - 1.1.1.1
                - 1.1.1.1
        """) == ["ecmpd.yaml:7: uplinks[0].check.targets[1]: 1.1.1.1 is listed twice"]


def test_duplicate_rule_name() -> None:
    assert rule_errors("""\
        rules:
          - name: web
            action: main
          - name: web
            action: balance
        """) == ["ecmpd.yaml:9: rules[1].name: duplicate rule name 'web' (also rules[0])"]


def test_pin_needs_uplink() -> None:
    assert rule_errors("""\
        rules:
          - name: vpn
            action: pin
        """) == ["ecmpd.yaml:7: rules[0].uplink: required for action pin"]


def test_pin_to_unknown_uplink() -> None:
    assert rule_errors("""\
        rules:
          - name: vpn
            action: pin
            uplink: isp-c
        """) == ["ecmpd.yaml:9: rules[0].uplink: no uplink named 'isp-c'; did you mean 'isp-a'?"]


def test_pin_to_unknown_uplink_without_close_match() -> None:
    assert rule_errors("""\
        rules:
          - name: vpn
            action: pin
            uplink: starlink
        """) == ["ecmpd.yaml:9: rules[0].uplink: no uplink named 'starlink'"]


@pytest.mark.parametrize("action", ["bypass", "main", "balance"])
def test_uplink_and_strict_only_with_pin(action: str) -> None:
    assert rule_errors(f"""\
        rules:
          - name: r
            action: {action}
            uplink: isp-a
            strict: true
        """) == [
        f"ecmpd.yaml:9: rules[0].uplink: only allowed with action pin, not {action}",
        f"ecmpd.yaml:10: rules[0].strict: only allowed with action pin, not {action}",
    ]


def test_strict_false_is_fine_anywhere() -> None:
    config = parse_config(
        TWO_UPLINKS + "rules:\n  - name: r\n    action: main\n    strict: false\n"
    )
    assert config.rules[0].strict is False


@pytest.mark.parametrize("proto", ["icmp", "gre", "47"])
def test_ports_need_a_port_protocol(proto: str) -> None:
    assert rule_errors(f"""\
        rules:
          - name: r
            action: main
            proto: {proto}
            dport: 443
            sport: 1-1023
        """) == [
        "ecmpd.yaml:10: rules[0].dport: ports need proto tcp, udp or sctp",
        "ecmpd.yaml:11: rules[0].sport: ports need proto tcp, udp or sctp",
    ]


def test_ports_without_proto() -> None:
    assert rule_errors("""\
        rules:
          - name: r
            action: main
            dport: 443
        """) == ["ecmpd.yaml:9: rules[0].dport: ports need proto tcp, udp or sctp"]


@pytest.mark.parametrize("proto", ["tcp", "udp", "sctp", "6", "17", "132"])
def test_ports_with_port_protocols(proto: str) -> None:
    config = parse_config(
        TWO_UPLINKS + f"rules:\n  - name: r\n    action: main\n    proto: {proto}\n    dport: 53\n"
    )
    assert config.rules[0].dport is not None


def test_fwmask_needs_fwmark() -> None:
    assert rule_errors("""\
        rules:
          - name: r
            action: main
            fwmask: 0xff
        """) == ["ecmpd.yaml:9: rules[0].fwmask: needs fwmark"]


def test_from_and_to_families_differ() -> None:
    assert rule_errors("""\
        rules:
          - name: r
            action: main
            from: 10.0.0.0/8
            to: 2001:db8::/32
        """) == ["ecmpd.yaml:10: rules[0].to: is IPv6 but from is IPv4"]


def test_too_many_rules_for_the_priority_block() -> None:
    rules = "".join(f"  - name: r{i}\n    action: main\n" for i in range(999))
    assert errors(TWO_UPLINKS + "rules:\n" + rules) == [
        "ecmpd.yaml:6: rules: 2 uplinks and 999 rules need 1001 priorities; ecmpd owns only 1000"
    ]


def test_exactly_enough_rules() -> None:
    rules = "".join(f"  - name: r{i}\n    action: main\n" for i in range(998))
    assert len(parse_config(TWO_UPLINKS + "rules:\n" + rules).rules) == 998


def test_all_semantic_errors_at_once() -> None:
    assert errors("""\
        uplinks:
          - name: isp-a
            interface: eth0
            table: 200
          - name: isp-a
            interface: eth0
        rules:
          - name: vpn
            action: pin
            uplink: isp-x
          - name: vpn
            action: main
            strict: true
        """) == [
        "ecmpd.yaml:4: uplinks[0].table: table 200 is already the balancer table",
        "ecmpd.yaml:5: uplinks[1].name: duplicate uplink name 'isp-a' (also uplinks[0])",
        "ecmpd.yaml:6: uplinks[1].interface: interface 'eth0' is already used by uplink 'isp-a'",
        "ecmpd.yaml:10: rules[0].uplink: no uplink named 'isp-x'; did you mean 'isp-a'?",
        "ecmpd.yaml:11: rules[1].name: duplicate rule name 'vpn' (also rules[0])",
        "ecmpd.yaml:13: rules[1].strict: only allowed with action pin, not main",
    ]


def test_semantic_checks_run_beside_field_errors() -> None:
    """Field errors and cross-field findings come in one report, not one batch at a time."""
    assert errors("""\
        uplinks:
          - name: isp-a
            interface: eth0
            weight: lots
          - name: isp-a
            interface: eth0
        """) == [
        "ecmpd.yaml:4: uplinks[0].weight: expected an integer, got 'lots'",
        "ecmpd.yaml:5: uplinks[1].name: duplicate uplink name 'isp-a' (also uplinks[0])",
        "ecmpd.yaml:6: uplinks[1].interface: interface 'eth0' is already used by uplink 'isp-a'",
    ]


def test_findings_within_an_entry_with_a_refused_field_are_left_out() -> None:
    """A reset day without its (unparsable) cap is not reported as lacking a cap."""
    assert errors("""\
        uplinks:
          - name: isp-a
            interface: eth0
            data_cap: lots/month
            data_cap_reset_day: 3
        """) == [
        "ecmpd.yaml:4: uplinks[0].data_cap: expected a volume per period like '20GB/month',"
        " got 'lots/month'",
    ]


def test_a_refused_required_field_leaves_the_field_errors_alone() -> None:
    """With a required key refused nothing sound is left to cross-check."""
    assert errors("""\
        uplinks:
          - name: Not_A_Name
            interface: eth0
          - name: isp-b
            interface: eth0
        """) == [
        "ecmpd.yaml:2: uplinks[0].name: 'Not_A_Name' is not a valid name"
        " (a-z, 0-9 and '-', at most 15 characters)",
    ]


def test_point_to_point_and_ipv6_only_uplinks_are_fine() -> None:
    config = parse_config(
        dedent("""\
        uplinks:
          - name: ppp
            interface: ppp0
            source: 100.64.0.7
          - name: v6
            interface: eth1
            gateway6: fe80::1
            source6: 2001:db8::7
        """)
    )
    assert config.uplinks[0].gateway is None and config.uplinks[1].gateway is None
