"""Loading valid configs: the reference example, a minimal one, defaults and resolved values."""

from __future__ import annotations

import shutil
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from textwrap import dedent

import pytest

from ecmpd.config import (
    BalancerConfig,
    CheckConfig,
    Config,
    ConfigError,
    HashSpec,
    MetricsConfig,
    Mode,
    RuleActionName,
    RuleConfig,
    UplinkConfig,
    WhenAllDown,
    load_config,
    parse_config,
)
from ecmpd.model import GroupType, PortRange

EXAMPLE = Path(__file__).parents[2] / "src/ecmpd/examples/ecmpd.example.yaml"
CONFIGS = Path(__file__).parent / "configs"


@pytest.fixture(scope="module")
def example() -> Config:
    return load_config(EXAMPLE)


def test_example_top_level(example: Config) -> None:
    assert example.filename == str(EXAMPLE)
    assert example.mode is Mode.HOST
    assert example.hash == HashSpec.L4
    assert example.hash.policy == 1
    assert example.balancer == BalancerConfig(
        table=200, group=GroupType.RESILIENT, when_all_down=WhenAllDown.KEEP
    )
    assert example.rule_priority == 10000
    assert example.hooks == Path("/etc/ecmpd/hooks.d")
    assert example.metrics == MetricsConfig(listen="127.0.0.1:9474")
    assert example.metrics.host == "127.0.0.1"
    assert example.metrics.port == 9474


def test_example_uplinks(example: Config) -> None:
    isp_a, isp_b = example.uplinks
    assert (isp_a.name, isp_a.interface, isp_a.table, isp_a.weight) == ("isp-a", "eth0", 101, 1)
    assert isp_a.gateway == IPv4Address("192.168.1.1")
    assert isp_a.source == IPv4Address("192.168.1.100")
    assert isp_a.nat is True
    assert isp_a.check == CheckConfig(
        targets=(IPv4Address("192.168.1.1"), IPv4Address("198.51.100.1")),
        method="icmp",
        interval=0.2,
        timeout=1.0,
        down_after=3,
        up_after=5,
        min_up=1,
        max_loss=0.2,
        max_rtt=0.5,
        degraded_loss=0.05,
        degraded_rtt=0.2,
    )
    assert isp_a.mptcp is True and not example.mptcp
    assert [u.name for u in example.mptcp_uplinks()] == ["isp-a"]
    # isp-b gives only a weight: the table is allocated after isp-a's, nat off in host mode.
    assert (isp_b.name, isp_b.interface, isp_b.table, isp_b.weight) == ("isp-b", "eth1", 102, 2)
    assert isp_b.nat is False
    assert isp_b.check == CheckConfig()
    assert example.uplink("isp-b") is isp_b


def test_example_rules(example: Config) -> None:
    assert [(r.name, r.action) for r in example.rules] == [
        ("local", RuleActionName.BYPASS),
        ("vpn-laptop", RuleActionName.PIN),
        ("bank", RuleActionName.MAIN),
        ("everything-else", RuleActionName.BALANCE),
    ]
    vpn = example.rules[1]
    assert vpn.from_ == IPv4Network("192.168.10.50/32")
    assert (vpn.uplink, vpn.strict) == (("isp-a",), False)
    assert example.rules[2].to == IPv4Network("203.0.113.0/24")


def test_example_lines(example: Config) -> None:
    text = EXAMPLE.read_text().splitlines()
    line = example.line_of("uplinks[1].weight")
    assert line is not None and text[line - 1].strip() == "weight: 2"
    line = example.line_of("rules[1].from")
    assert line is not None and text[line - 1].strip() == "from: 192.168.10.50/32"
    assert example.line_of("rules[1].from_") == example.line_of("rules[1].from")
    # The allocated table of isp-b is in no line: the uplink's own line stands in.
    line = example.line_of("uplinks[1].table")
    assert line is not None and text[line - 1].strip() == "- name: isp-b"
    assert example.line_of("nonsense") is None


def test_minimal_defaults() -> None:
    config = load_config(CONFIGS / "minimal.yaml")
    assert config.mode is Mode.HOST
    assert config.hash == HashSpec(1, ())
    assert config.balancer == BalancerConfig()
    assert config.balancer.buckets == 512
    assert config.balancer.idle_timer == 0.0
    assert config.balancer.unbalanced_timer == 0.0
    assert config.rule_priority == 10000
    assert config.hooks is None and config.metrics is None
    (wan,) = config.uplinks
    assert (wan.weight, wan.table, wan.nat, wan.bandwidth) == (1, 101, False, None)
    assert (wan.source, wan.gateway6, wan.source6) == (None, None, None)
    assert wan.check.targets == () and wan.check.tcp_port is None
    assert (wan.check.interval, wan.check.timeout) == (0.15, 0.25)
    assert (wan.check.down_after, wan.check.up_after, wan.check.min_up) == (5, 5, 1)
    assert (wan.check.max_loss, wan.check.max_rtt) == (None, None)
    assert config.rules == [
        RuleConfig(name="local", action=RuleActionName.BYPASS),
        RuleConfig(name="everything-else", action=RuleActionName.BALANCE),
    ]
    assert config.line_of("uplinks[0].gateway") == 5


def test_empty_sections_mean_defaults() -> None:
    config = parse_config(
        dedent("""\
        balancer:
        rules:
        uplinks:
          - name: wan
            interface: eth0
            check:
        """)
    )
    assert config.balancer == BalancerConfig()
    assert [r.name for r in config.rules] == ["local", "everything-else"]
    assert config.uplinks[0].check == CheckConfig()


def test_router_mode_and_everything_set() -> None:
    config = parse_config(
        dedent("""\
        mode: router
        hash: [src-ip, dst-ip, proto, inner-flowlabel]
        balancer:
          table: 300
          group: hash-threshold
          when_all_down: unreachable
          buckets: 128
          idle_timer: 2m
          unbalanced_timer: 1h
        rule_priority: 20000
        metrics:
          listen: "[::1]:9100"
        uplinks:
          - name: fiber
            interface: enp1s0
            gateway: dhcp
            gateway6: fe80::1
            source6: 2001:db8::2
            check:
              targets: [2001:db8::53, 192.0.2.53]
              method: tcp:443
              min_up: 2
          - name: lte
            interface: wwan0
            nat: false
        rules:
          - name: marked
            action: pin
            uplink: lte
            strict: true
            fwmark: 0x10/0xff
            iif: br-lan
          - name: web
            action: balance
            proto: tcp
            dport: 443
            sport: 1024-65535
            from: 10.0.0.0/8
            to: 192.0.2.7
        """)
    )
    assert config.mode is Mode.ROUTER
    assert config.hash == HashSpec(3, ("src-ip", "dst-ip", "ip-proto", "inner-flowlabel"))
    assert config.hash.fields_mask() == 0x1 | 0x2 | 0x4 | 0x200
    assert config.balancer == BalancerConfig(
        table=300,
        group=GroupType.HASH_THRESHOLD,
        when_all_down=WhenAllDown.UNREACHABLE,
        buckets=128,
        idle_timer=120.0,
        unbalanced_timer=3600.0,
    )
    assert config.rule_priority == 20000
    assert config.metrics is not None
    assert (config.metrics.host, config.metrics.port) == ("::1", 9100)
    fiber, lte = config.uplinks
    assert fiber.gateway == "dhcp" and fiber.gateway6 == IPv6Address("fe80::1")
    assert fiber.source6 == IPv6Address("2001:db8::2")
    assert fiber.check.tcp_port == 443 and fiber.check.min_up == 2
    assert (fiber.nat, lte.nat) == (True, False)  # router mode: nat unless said otherwise
    assert fiber.nat_enabled(Mode.HOST) is True  # resolved at load, so mode no longer matters
    assert lte.gateway is None  # point-to-point
    assert (fiber.table, lte.table) == (101, 102)
    marked, web = config.rules
    assert (marked.fwmark, marked.fwmask, marked.iif, marked.strict) == (0x10, 0xFF, "br-lan", True)
    assert (web.proto, web.dport, web.sport) == (6, PortRange(443, 443), PortRange(1024, 65535))
    assert web.to == IPv4Network("192.0.2.7/32")


def test_rules_may_be_empty() -> None:
    config = parse_config("uplinks: [{name: wan, interface: eth0}]\nrules: []\n")
    assert config.rules == []


def test_same_settings_compare_equal_whatever_the_layout() -> None:
    compact = parse_config("uplinks: [{name: wan, interface: eth0, gateway: 192.0.2.1}]", "a.yaml")
    spread = load_config(CONFIGS / "minimal.yaml")
    assert compact == spread
    assert compact.filename != spread.filename
    assert compact.line_of("uplinks[0].gateway") == 1


def test_uplink_lookup_of_unknown_name_raises() -> None:
    config = load_config(CONFIGS / "minimal.yaml")
    with pytest.raises(KeyError):
        config.uplink("nope")


def test_models_can_be_built_in_code() -> None:
    """Other modules' tests build configs directly; the field names are the API."""
    uplink = UplinkConfig(name="wan", interface="eth0", gateway=IPv4Address("192.0.2.1"), table=7)
    rule = RuleConfig(name="r", action=RuleActionName.MAIN, from_=IPv4Network("10.0.0.0/8"))
    config = Config(uplinks=[uplink], rules=[rule])
    assert config.uplink("wan").table == 7
    assert config.filename == "<string>" and config.line_of("uplinks[0]") is None
    assert uplink.nat_enabled(Mode.ROUTER) is True and uplink.nat_enabled(Mode.HOST) is False


def test_models_are_frozen() -> None:
    config = load_config(CONFIGS / "minimal.yaml")
    with pytest.raises(ValueError, match="frozen"):
        config.uplinks[0].weight = 3


def test_load_config_copies_file_name(tmp_path: Path) -> None:
    path = tmp_path / "ecmpd.yaml"
    shutil.copy(CONFIGS / "minimal.yaml", path)
    assert load_config(path).filename == str(path)
    assert load_config(str(path)).filename == str(path)


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("/nonexistent/ecmpd.yaml")
    assert str(caught.value) == "/nonexistent/ecmpd.yaml: cannot read: No such file or directory"


def test_unreadable_encoding(tmp_path: Path) -> None:
    path = tmp_path / "ecmpd.yaml"
    path.write_bytes(b"uplinks: \xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (issue,) = caught.value.issues
    assert issue.file == str(path) and issue.line is None
    assert issue.message.startswith("cannot read: 'utf-8' codec can't decode")


def test_example_announce_block_parses_once_uncommented() -> None:
    text = EXAMPLE.read_text()
    lines = [line[2:] if line.startswith("# announce:") else line for line in text.splitlines()]
    config = parse_config("\n".join(lines), "ecmpd.yaml")
    assert config.announce is not None
    assert (config.announce.table, config.announce.min_uplinks.ipv4) == (150, 1)
