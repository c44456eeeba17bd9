"""Schema errors: YAML in, the exact `file:line: field: message` lines out."""

from __future__ import annotations

from textwrap import dedent

import pytest

from ecmpd.config import ConfigError, ConfigIssue, parse_config


def errors(text: str) -> list[str]:
    """The rendered issues of a config that must not load."""
    with pytest.raises(ConfigError) as caught:
        parse_config(dedent(text), "ecmpd.yaml")
    assert str(caught.value) == "\n".join(str(issue) for issue in caught.value.issues)
    return [str(issue) for issue in caught.value.issues]


def uplink_with(*lines: str) -> str:
    """One uplink (name on line 2) with extra lines from line 5 on, indented as its keys."""
    extra = "".join(f"    {line}\n" for line in lines)
    return "uplinks:\n  - name: isp-a\n    interface: eth0\n    gateway: 192.168.1.1\n" + extra


def test_issue_rendering() -> None:
    assert str(ConfigIssue("e.yaml", 3, "mode", "bad")) == "e.yaml:3: mode: bad"
    assert str(ConfigIssue("e.yaml", None, "uplinks", "required")) == "e.yaml: uplinks: required"
    assert str(ConfigIssue("e.yaml", 7, "", "invalid YAML: x")) == "e.yaml:7: invalid YAML: x"
    error = ConfigError([ConfigIssue("a", 1, "x", "m"), ConfigIssue("a", 2, "y", "n")])
    assert str(error) == "a:1: x: m\na:2: y: n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            """\
            uplinks:
              - name: isp-a
                interface: eth0
                gateway: 192.168.1.1
              - name: isp-b
                interface: eth1
                gateway: 192.168.2.300
            """,
            "ecmpd.yaml:7: uplinks[1].gateway: '192.168.2.300' is not an IPv4 or IPv6 address",
            id="spec-example",
        ),
        pytest.param(
            "mode: hots\n" + uplink_with(),
            "ecmpd.yaml:1: mode: must be one of: host, router (got 'hots')",
            id="mode-enum",
        ),
        pytest.param(
            "hash: l5\n" + uplink_with(),
            "ecmpd.yaml:1: hash: must be one of: l3, l4, l3-inner, or a list of fields (got 'l5')",
            id="hash-name",
        ),
        pytest.param(
            "hash:\n  - src-ip\n  - dst-ipp\n" + uplink_with(),
            "ecmpd.yaml:3: hash[1]: unknown hash field 'dst-ipp'; did you mean 'dst-ip'?",
            id="hash-field",
        ),
        pytest.param(
            "hash: [src-ip, proto, ip-proto]\n" + uplink_with(),
            "ecmpd.yaml:1: hash[2]: 'ip-proto' is listed twice",
            id="hash-field-twice",
        ),
        pytest.param(
            "hash: []\n" + uplink_with(),
            "ecmpd.yaml:1: hash: a custom hash needs at least one field",
            id="hash-empty",
        ),
        pytest.param(
            "hash: {l4: 1}\n" + uplink_with(),
            "ecmpd.yaml:1: hash: expected l3, l4, l3-inner or a list of fields, got a mapping",
            id="hash-type",
        ),
        pytest.param(
            "balancer:\n  table: 254\n" + uplink_with(),
            "ecmpd.yaml:2: balancer.table: table 254 is the kernel's main table",
            id="balancer-table-main",
        ),
        pytest.param(
            "balancer:\n  table: abc\n" + uplink_with(),
            "ecmpd.yaml:2: balancer.table: expected a table id (an integer), got 'abc'",
            id="balancer-table-type",
        ),
        pytest.param(
            "balancer:\n  table: 4294967296\n" + uplink_with(),
            "ecmpd.yaml:2: balancer.table: must be between 1 and 4294967295, got 4294967296",
            id="balancer-table-range",
        ),
        pytest.param(
            "balancer:\n  group: resilent\n" + uplink_with(),
            "ecmpd.yaml:2: balancer.group: must be one of: hash-threshold, resilient "
            "(got 'resilent')",
            id="balancer-group",
        ),
        pytest.param(
            "balancer:\n  when_all_down: panic\n" + uplink_with(),
            "ecmpd.yaml:2: balancer.when_all_down: must be one of: keep, main, unreachable "
            "(got 'panic')",
            id="balancer-when-all-down",
        ),
        pytest.param(
            "balancer:\n  buckets: 1\n" + uplink_with(),
            "ecmpd.yaml:2: balancer.buckets: must be between 2 and 32768, got 1",
            id="balancer-buckets",
        ),
        pytest.param(
            "balancer:\n  idle_timer: soon\n" + uplink_with(),
            "ecmpd.yaml:2: balancer.idle_timer: expected a duration like '200ms', '1s' or '2m', "
            "got 'soon'",
            id="balancer-idle-timer",
        ),
        pytest.param(
            "balancer: 200\n" + uplink_with(),
            "ecmpd.yaml:1: balancer: expected a mapping, got 200",
            id="balancer-type",
        ),
        pytest.param(
            "rule_priority: 0\n" + uplink_with(),
            "ecmpd.yaml:1: rule_priority: must be between 1 and 31766, got 0",
            id="priority-zero",
        ),
        pytest.param(
            "rule_priority: 31767\n" + uplink_with(),
            "ecmpd.yaml:1: rule_priority: must be between 1 and 31766, got 31767",
            id="priority-reaches-main-rule",
        ),
        pytest.param(
            "rule_priority: high\n" + uplink_with(),
            "ecmpd.yaml:1: rule_priority: expected an integer, got 'high'",
            id="priority-type",
        ),
        pytest.param(
            "hooks: 3\n" + uplink_with(),
            "ecmpd.yaml:1: hooks: expected a path, got 3",
            id="hooks-type",
        ),
        pytest.param(
            "metrics:\n  listen: localhost:9474\n" + uplink_with(),
            "ecmpd.yaml:2: metrics.listen: 'localhost' is not an IPv4 or IPv6 address",
            id="metrics-host",
        ),
        pytest.param(
            "metrics:\n  listen: 127.0.0.1:99999\n" + uplink_with(),
            "ecmpd.yaml:2: metrics.listen: port must be between 1 and 65535, got '99999'",
            id="metrics-port",
        ),
        pytest.param(
            "metrics:\n  listen: 9474\n" + uplink_with(),
            "ecmpd.yaml:2: metrics.listen: expected 'ADDRESS:PORT' like '127.0.0.1:9474', got 9474",
            id="metrics-no-host",
        ),
        pytest.param(
            "metrics: {}\n" + uplink_with(),
            "ecmpd.yaml:1: metrics.listen: required",
            id="metrics-listen-required",
        ),
        pytest.param(
            "mode: host\n",
            "ecmpd.yaml: uplinks: required",
            id="uplinks-required",
        ),
        pytest.param(
            "uplinks: []\n",
            "ecmpd.yaml:1: uplinks: must not be empty",
            id="uplinks-empty",
        ),
        pytest.param(
            "uplinks: eth0\n",
            "ecmpd.yaml:1: uplinks: expected a list, got 'eth0'",
            id="uplinks-type",
        ),
        pytest.param(
            "uplinks:\n  - eth0\n",
            "ecmpd.yaml:2: uplinks[0]: expected a mapping, got 'eth0'",
            id="uplink-type",
        ),
        pytest.param(
            "uplinks:\n  - interface: eth0\n",
            "ecmpd.yaml:2: uplinks[0].name: required",
            id="uplink-name-required",
        ),
        pytest.param(
            "uplinks:\n  - name: ISP_A\n    interface: eth0\n",
            "ecmpd.yaml:2: uplinks[0].name: 'ISP_A' is not a valid name "
            "(a-z, 0-9 and '-', at most 15 characters)",
            id="uplink-name-charset",
        ),
        pytest.param(
            "uplinks:\n  - name: a-very-long-uplink\n    interface: eth0\n",
            "ecmpd.yaml:2: uplinks[0].name: 'a-very-long-uplink' is not a valid name "
            "(a-z, 0-9 and '-', at most 15 characters)",
            id="uplink-name-length",
        ),
        pytest.param(
            "uplinks:\n  - name: 7\n    interface: eth0\n",
            "ecmpd.yaml:2: uplinks[0].name: expected a name, got 7",
            id="uplink-name-type",
        ),
        pytest.param(
            "uplinks:\n  - name: a\n    interface: eth0:1\n",
            "ecmpd.yaml:3: uplinks[0].interface: 'eth0:1' is not a valid interface name "
            "(1 to 15 characters, no '/', ':' or whitespace)",
            id="interface-colon",
        ),
        pytest.param(
            "uplinks:\n  - name: a\n    interface: enp0s31f6-uplink\n",
            "ecmpd.yaml:3: uplinks[0].interface: 'enp0s31f6-uplink' is not a valid interface "
            "name (1 to 15 characters, no '/', ':' or whitespace)",
            id="interface-length",
        ),
        pytest.param(
            "uplinks:\n  - name: a\n",
            "ecmpd.yaml:2: uplinks[0].interface: required",
            id="interface-required",
        ),
        pytest.param(
            "uplinks:\n  - name: a\n    interface: eth0\n    gateway: 2001:db8::1\n",
            "ecmpd.yaml:4: uplinks[0].gateway: '2001:db8::1' is an IPv6 address; "
            "put it in gateway6",
            id="gateway-ipv6",
        ),
        pytest.param(
            "uplinks:\n  - name: a\n    interface: eth0\n    gateway: dhcp4\n",
            "ecmpd.yaml:4: uplinks[0].gateway: 'dhcp4' is not an IPv4 or IPv6 address",
            id="gateway-garbage",
        ),
        pytest.param(
            uplink_with("gateway6: dhcp"),
            "ecmpd.yaml:5: uplinks[0].gateway6: 'dhcp' is not a gateway source for IPv6; use ra",
            id="gateway6-dhcp",
        ),
        pytest.param(
            uplink_with("source: 2001:db8::5"),
            "ecmpd.yaml:5: uplinks[0].source: '2001:db8::5' is an IPv6 address; put it in source6",
            id="source-ipv6",
        ),
        pytest.param(
            uplink_with("gateway6: 192.168.1.254"),
            "ecmpd.yaml:5: uplinks[0].gateway6: '192.168.1.254' is an IPv4 address; "
            "put it in gateway",
            id="gateway6-ipv4",
        ),
        pytest.param(
            uplink_with("source6: 10.0.0.1"),
            "ecmpd.yaml:5: uplinks[0].source6: '10.0.0.1' is an IPv4 address; put it in source",
            id="source6-ipv4",
        ),
        pytest.param(
            uplink_with("weight: 0"),
            "ecmpd.yaml:5: uplinks[0].weight: must be between 1 and 256, got 0",
            id="weight-low",
        ),
        pytest.param(
            uplink_with("weight: 257"),
            "ecmpd.yaml:5: uplinks[0].weight: must be between 1 and 256, got 257",
            id="weight-high",
        ),
        pytest.param(
            uplink_with("weight: 1.5"),
            "ecmpd.yaml:5: uplinks[0].weight: expected an integer, got 1.5",
            id="weight-float",
        ),
        pytest.param(
            uplink_with("weight: yes"),
            "ecmpd.yaml:5: uplinks[0].weight: expected an integer, got true",
            id="weight-bool",
        ),
        pytest.param(
            uplink_with("bandwidth: 100Mbps"),
            "ecmpd.yaml:5: uplinks[0].bandwidth: expected a bandwidth like '100Mbit' or '1Gbit', "
            "got '100Mbps'",
            id="bandwidth-bytes-unit",
        ),
        pytest.param(
            uplink_with("table: 0"),
            "ecmpd.yaml:5: uplinks[0].table: must be between 1 and 4294967295, got 0",
            id="table-zero",
        ),
        pytest.param(
            uplink_with("table: 255"),
            "ecmpd.yaml:5: uplinks[0].table: table 255 is the kernel's local table",
            id="table-local",
        ),
        pytest.param(
            uplink_with("table: 253"),
            "ecmpd.yaml:5: uplinks[0].table: table 253 is the kernel's default table",
            id="table-default",
        ),
        pytest.param(
            uplink_with("nat: maybe"),
            "ecmpd.yaml:5: uplinks[0].nat: expected true or false, got 'maybe'",
            id="nat-type",
        ),
        pytest.param(
            uplink_with("check: icmp"),
            "ecmpd.yaml:5: uplinks[0].check: expected a mapping, got 'icmp'",
            id="check-type",
        ),
        pytest.param(
            uplink_with("check:", "  targets: 1.1.1.1"),
            "ecmpd.yaml:6: uplinks[0].check.targets: expected a list, got '1.1.1.1'",
            id="targets-type",
        ),
        pytest.param(
            uplink_with("check:", "  targets:", "    - 1.1.1.1", "    - one.one.one.one"),
            "ecmpd.yaml:8: uplinks[0].check.targets[1]: 'one.one.one.one' is not an IPv4 or "
            "IPv6 address",
            id="target-address",
        ),
        pytest.param(
            uplink_with("check:", "  method: ping"),
            "ecmpd.yaml:6: uplinks[0].check.method: expected 'icmp' or 'tcp:PORT' "
            "(port 1..65535), got 'ping'",
            id="method-name",
        ),
        pytest.param(
            uplink_with("check:", "  method: tcp:70000"),
            "ecmpd.yaml:6: uplinks[0].check.method: expected 'icmp' or 'tcp:PORT' "
            "(port 1..65535), got 'tcp:70000'",
            id="method-port",
        ),
        pytest.param(
            uplink_with("check:", "  interval: 0"),
            "ecmpd.yaml:6: uplinks[0].check.interval: must be greater than 0, got 0",
            id="interval-zero",
        ),
        pytest.param(
            uplink_with("check:", "  interval: 5 sec"),
            "ecmpd.yaml:6: uplinks[0].check.interval: expected a duration like '200ms', '1s' "
            "or '2m', got '5 sec'",
            id="interval-unit",
        ),
        pytest.param(
            uplink_with("check:", "  timeout: 0ms"),
            "ecmpd.yaml:6: uplinks[0].check.timeout: must be greater than 0, got '0ms'",
            id="timeout-zero",
        ),
        pytest.param(
            uplink_with("check:", "  down_after: 0"),
            "ecmpd.yaml:6: uplinks[0].check.down_after: must be between 1 and 100, got 0",
            id="down-after",
        ),
        pytest.param(
            uplink_with("check:", "  up_after: 101"),
            "ecmpd.yaml:6: uplinks[0].check.up_after: must be between 1 and 100, got 101",
            id="up-after",
        ),
        pytest.param(
            uplink_with("check:", "  min_up: 0"),
            "ecmpd.yaml:6: uplinks[0].check.min_up: must be between 1 and 1000, got 0",
            id="min-up",
        ),
        pytest.param(
            uplink_with("check:", "  max_loss: 0.2"),
            "ecmpd.yaml:6: uplinks[0].check.max_loss: expected a percentage like '20%', got 0.2",
            id="max-loss-bare-number",
        ),
        pytest.param(
            uplink_with("check:", "  max_loss: 120%"),
            "ecmpd.yaml:6: uplinks[0].check.max_loss: must be between 0% and 100%, got '120%'",
            id="max-loss-range",
        ),
        pytest.param(
            uplink_with("check:", "  max_rtt: -5ms"),
            "ecmpd.yaml:6: uplinks[0].check.max_rtt: expected a duration like '200ms', '1s' or "
            "'2m', got '-5ms'",
            id="max-rtt",
        ),
        pytest.param(
            uplink_with() + "rules: all\n",
            "ecmpd.yaml:5: rules: expected a list, got 'all'",
            id="rules-type",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n",
            "ecmpd.yaml:6: rules[0].action: required",
            id="rule-action-required",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - action: main\n",
            "ecmpd.yaml:6: rules[0].name: required",
            id="rule-name-required",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: route\n",
            "ecmpd.yaml:7: rules[0].action: must be one of: bypass, pin, main, balance "
            "(got 'route')",
            id="rule-action",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: Bank\n    action: main\n",
            "ecmpd.yaml:6: rules[0].name: 'Bank' is not a valid name "
            "(a-z, 0-9 and '-', at most 32 characters)",
            id="rule-name",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: main\n    from: 10.0.0.1/8\n",
            "ecmpd.yaml:8: rules[0].from: '10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?",
            id="from-host-bits",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: main\n    to: 2001:db8::1/32\n",
            "ecmpd.yaml:8: rules[0].to: '2001:db8::1/32' has host bits set; "
            "did you mean 2001:db8::/32?",
            id="to-host-bits-ipv6",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: main\n    to: internet\n",
            "ecmpd.yaml:8: rules[0].to: 'internet' is not an IPv4 or IPv6 address or prefix",
            id="to-garbage",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: main\n    iif: br/lan\n",
            "ecmpd.yaml:8: rules[0].iif: 'br/lan' is not a valid interface name "
            "(1 to 15 characters, no '/', ':' or whitespace)",
            id="iif",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: main\n    fwmark: 0x1/0xz\n",
            "ecmpd.yaml:8: rules[0].fwmark: expected an integer like 16 or 0x10, got '0xz' "
            "in '0x1/0xz'",
            id="fwmark-mask",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: main\n    fwmark: 0x100000000\n",
            "ecmpd.yaml:8: rules[0].fwmark: must be between 0 and 0xffffffff, got 4294967296",
            id="fwmark-range",
        ),
        pytest.param(
            uplink_with()
            + "rules:\n  - name: x\n    action: main\n    fwmark: 0x1/0xf\n    fwmask: 0xff\n",
            "ecmpd.yaml:8: rules[0].fwmark: the mask is given both here and in fwmask; keep one",
            id="fwmark-mask-twice",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: main\n    fwmask: -1\n",
            "ecmpd.yaml:8: rules[0].fwmask: must be between 0 and 0xffffffff, got -1",
            id="fwmask-range",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: main\n    proto: quic\n",
            "ecmpd.yaml:8: rules[0].proto: expected a protocol (icmp, tcp, udp, gre, esp, icmpv6, "
            "sctp) or a number 0..255, got 'quic'",
            id="proto",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: main\n    proto: 256\n",
            "ecmpd.yaml:8: rules[0].proto: expected a protocol (icmp, tcp, udp, gre, esp, icmpv6, "
            "sctp) or a number 0..255, got 256",
            id="proto-number",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: main\n    proto: tcp\n    dport: 0\n",
            "ecmpd.yaml:9: rules[0].dport: ports must be between 1 and 65535, got 0",
            id="dport-zero",
        ),
        pytest.param(
            uplink_with()
            + "rules:\n  - name: x\n    action: main\n    proto: tcp\n    sport: 2000-1000\n",
            "ecmpd.yaml:9: rules[0].sport: range start is above its end in '2000-1000'",
            id="sport-reversed",
        ),
        pytest.param(
            uplink_with()
            + "rules:\n  - name: x\n    action: main\n    proto: udp\n    dport: https\n",
            "ecmpd.yaml:9: rules[0].dport: expected a port or a range like '1000-2000', "
            "got 'https'",
            id="dport-name",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: pin\n    strict: sometimes\n",
            "ecmpd.yaml:8: rules[0].strict: expected true or false, got 'sometimes'",
            id="strict-type",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: pin\n    uplink: [isp-a, 5]\n",
            "ecmpd.yaml:8: rules[0].uplink[1]: expected a string, got 5",
            id="rule-uplink-type",
        ),
    ],
)
def test_schema_error(text: str, expected: str) -> None:
    assert errors(text) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "uplink:\n  - name: a\n    interface: eth0\n",
            [
                "ecmpd.yaml: uplinks: required",
                "ecmpd.yaml:1: uplink: unknown key; did you mean 'uplinks'?",
            ],
            id="top-level",
        ),
        pytest.param(
            "uplinks:\n  - name: a\n    interface: eth0\n    gatway: 192.168.1.1\n",
            ["ecmpd.yaml:4: uplinks[0].gatway: unknown key; did you mean 'gateway'?"],
            id="uplink",
        ),
        pytest.param(
            uplink_with("check:", "  interwal: 1s"),
            ["ecmpd.yaml:6: uplinks[0].check.interwal: unknown key; did you mean 'interval'?"],
            id="check",
        ),
        pytest.param(
            "balancer:\n  bucket: 64\n" + uplink_with(),
            ["ecmpd.yaml:2: balancer.bucket: unknown key; did you mean 'buckets'?"],
            id="balancer",
        ),
        pytest.param(
            "metrics:\n  listen: 127.0.0.1:1\n  lisen: x\n" + uplink_with(),
            ["ecmpd.yaml:3: metrics.lisen: unknown key; did you mean 'listen'?"],
            id="metrics",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: main\n    form: 10.0.0.0/8\n",
            ["ecmpd.yaml:8: rules[0].form: unknown key; did you mean 'from'?"],
            id="rule-from",
        ),
        pytest.param(
            uplink_with() + "rules:\n  - name: x\n    action: main\n    dst_port: 443\n",
            ["ecmpd.yaml:8: rules[0].dst_port: unknown key; did you mean 'dport'?"],
            id="rule-dport",
        ),
        pytest.param(
            uplink_with("colour: blue"),
            [
                "ecmpd.yaml:5: uplinks[0].colour: unknown key (valid keys: name, interface, "
                "gateway, source, gateway6, source6, weight, bandwidth, table, nat, tier, metered,"
                " data_cap, data_cap_reset_day, failback, mptcp, on_failure, queue, check)"
            ],
            id="no-close-match",
        ),
    ],
)
def test_unknown_key(text: str, expected: list[str]) -> None:
    assert errors(text) == expected


def test_all_schema_errors_at_once_in_file_order() -> None:
    assert errors("""\
        mode: hots
        balancer:
          group: resilent
        uplinks:
          - name: isp-a
            interface: eth0
            gateway: 192.168.1.300
            check:
              interval: fast
          - name: isp-b
            interface: eth1
            gatway: 192.168.2.1
            weight: 0
        rules:
          - name: x
            action: pinn
            from: 10.1.1.1/24
        """) == [
        "ecmpd.yaml:1: mode: must be one of: host, router (got 'hots')",
        "ecmpd.yaml:3: balancer.group: must be one of: hash-threshold, resilient (got 'resilent')",
        "ecmpd.yaml:7: uplinks[0].gateway: '192.168.1.300' is not an IPv4 or IPv6 address",
        "ecmpd.yaml:9: uplinks[0].check.interval: expected a duration like '200ms', '1s' or "
        "'2m', got 'fast'",
        "ecmpd.yaml:12: uplinks[1].gatway: unknown key; did you mean 'gateway'?",
        "ecmpd.yaml:13: uplinks[1].weight: must be between 1 and 256, got 0",
        "ecmpd.yaml:16: rules[0].action: must be one of: bypass, pin, main, balance (got 'pinn')",
        "ecmpd.yaml:17: rules[0].from: '10.1.1.1/24' has host bits set; did you mean 10.1.1.0/24?",
    ]


def test_schema_and_duplicate_key_errors_together() -> None:
    assert errors("""\
        mode: host
        mode: router
        uplinks:
          - name: a
            interface: eth0
            weight: zero
        """) == [
        "ecmpd.yaml:2: mode: duplicate key; first given on line 1",
        "ecmpd.yaml:6: uplinks[0].weight: expected an integer, got 'zero'",
    ]


def test_duplicate_keys_nested() -> None:
    assert errors("""\
        uplinks:
          - name: a
            interface: eth0
            check:
              interval: 1s
              timeout: 2s
              interval: 2s
        """) == ["ecmpd.yaml:7: uplinks[0].check.interval: duplicate key; first given on line 5"]


def test_yaml_syntax_error() -> None:
    assert errors("""\
        uplinks:
          - name: a
            interface: eth0
           gateway: 1.2.3.4
        """) == [
        "ecmpd.yaml:4: invalid YAML: expected <block end>, but found '<block mapping start>'"
    ]


def test_yaml_unclosed_flow() -> None:
    assert errors("uplinks: [{name: a, interface: eth0}\n") == [
        "ecmpd.yaml:2: invalid YAML: expected ',' or ']', but got '<stream end>'"
    ]


def test_yaml_tab_indent() -> None:
    assert errors("uplinks:\n\t- name: a\n") == [
        "ecmpd.yaml:2: invalid YAML: found character '\\t' that cannot start any token"
    ]


def test_yaml_unsafe_tag_is_refused() -> None:
    assert errors("uplinks: !!python/object:os.system {}\n") == [
        "ecmpd.yaml:1: invalid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object:os.system'"
    ]


def test_several_documents() -> None:
    assert errors("uplinks: []\n---\nmode: host\n") == [
        "ecmpd.yaml:2: invalid YAML: but found another document"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "ecmpd.yaml: the file is empty"),
        ("# only a comment\n", "ecmpd.yaml: the file is empty"),
        ("- name: a\n", "ecmpd.yaml:1: expected a mapping of settings (uplinks: ...), got a list"),
        (
            "\nhello\n",
            "ecmpd.yaml:2: expected a mapping of settings (uplinks: ...), got a single value",
        ),
    ],
)
def test_not_a_mapping(text: str, expected: str) -> None:
    assert errors(text) == [expected]


def test_default_filename() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("mode: x\nuplinks: [{name: a, interface: b}]\n")
    assert str(caught.value) == "<string>:1: mode: must be one of: host, router (got 'x')"


def test_keys_are_read_as_written() -> None:
    """`yes:` and `1:` are misspelt keys, not booleans or numbers."""
    assert errors("yes: 1\n2: x\nuplinks: [{name: a, interface: eth0}]\n") == [
        "ecmpd.yaml:1: yes: unknown key (valid keys: mode, hash, balancer, rule_priority, "
        "connections, hooks, metrics, mptcp, uplinks, rules, announce)",
        "ecmpd.yaml:2: 2: unknown key (valid keys: mode, hash, balancer, rule_priority, "
        "connections, hooks, metrics, mptcp, uplinks, rules, announce)",
    ]


def test_merge_keys_and_anchors_work() -> None:
    config = parse_config(
        dedent("""\
        uplinks:
          - &common
            name: isp-a
            interface: eth0
            check: &fast {interval: 100ms}
          - <<: *common
            name: isp-b
            interface: eth1
            check: *fast
        """)
    )
    assert [(u.name, u.interface, u.check.interval) for u in config.uplinks] == [
        ("isp-a", "eth0", 0.1),
        ("isp-b", "eth1", 0.1),
    ]


def test_recursive_alias_does_not_hang() -> None:
    assert errors("uplinks: &x [*x]\n") == [
        "ecmpd.yaml:1: uplinks[0]: expected a mapping, got a list"
    ]
