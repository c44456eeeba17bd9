"""Golden: YAML config in -> netplan YAML out, and netplan itself must accept it."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecmpd.config import parse_config
from ecmpd.export import netplan
from ecmpd.facts import KernelFacts
from tests.golden.fixtures import DUAL, FACTS, FACTS6, LAB

EVERY_KIND = """
    uplinks:
      - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, weight: 3}
      - {name: lte, interface: ppp0}
      - {name: cable, interface: dhcp0, gateway: dhcp}
    rules:
      - {name: local, action: bypass}
      - {name: vpn, from: 192.0.2.50, action: pin, uplink: lte}
      - {name: bank, to: 203.0.113.0/24, action: main}
      - {name: web, proto: tcp, dport: 443, iif: lan0, action: balance}
      - {name: marked, fwmark: 0x20, action: pin, uplink: isp-a}
      - {name: masked, fwmark: 0x20/0xf0, action: main}
      - {name: v6, from: "2001:db8::/32", action: main}
      - {name: rest, action: balance}
"""
RESILIENT = "type resilient buckets 512 idle_timer 0 unbalanced_timer 0"


def render(yaml_text: str, facts: KernelFacts = FACTS) -> str:
    return netplan.render(parse_config(textwrap.dedent(yaml_text), "lab.yaml"), facts)


def test_the_lab_config() -> None:
    assert render(LAB) == textwrap.dedent("""\
        # ecmpd export --format netplan: the policy of lab.yaml for netplan
        # (checked against netplan 0.106, Debian bookworm). Save as /etc/netplan/90-ecmpd.yaml:
        # netplan merges it with the files that already configure these interfaces (move
        # an interface under vlans:/bonds:/bridges: if it is one). Static: no health checks
        # and no failover; for those run `ecmpd run` instead (it owns rule priorities
        # 10000-10999: do not use both).
        # netplan wants from or to in a rule: `from: 0.0.0.0/0` is `from all`.
        #
        # netplan cannot express:
        #   - the balanced route of table 200 (netplan has no nexthop groups or multipath routes)
        #   - sysctls (or put them in /etc/sysctl.d/90-ecmpd.conf)
        #   - rule local (10100): suppress_prefixlength 0
        # Run these once netplan has brought the links up, e.g. from a networkd-dispatcher
        # hook (/etc/networkd-dispatcher/routable.d/50-ecmpd) or a oneshot unit ordered
        # After=systemd-networkd-wait-online.service:
        #   sysctl -w net.ipv4.conf.wan-a.rp_filter=2
        #   sysctl -w net.ipv4.conf.wan-b.rp_filter=2
        #   sysctl -w net.ipv4.fib_multipath_hash_policy=1
        #   ip nexthop add id 248316005 via 10.1.0.1 dev wan-a proto 236
        #   ip nexthop add id 248316006 via 10.2.0.1 dev wan-b proto 236
        #   ip nexthop add id 248316104 group 248316005,1/248316006,2 {RESILIENT} proto 236
        #   ip route add default nhid 248316104 table 200 proto 236
        #   ip rule add priority 10100 lookup main suppress_prefixlength 0 proto 236
        network:
          version: 2
          ethernets:
            wan-a:  # uplink isp-a
              routes:
                - to: default
                  via: 10.1.0.1
                  from: 10.1.0.2
                  table: 101
                - to: 10.1.0.0/24
                  from: 10.1.0.2
                  scope: link
                  table: 101
              routing-policy:
                - from: 10.1.0.2  # reply:isp-a
                  table: 101
                  priority: 10000
                - from: 0.0.0.0/0  # everything-else
                  table: 200
                  priority: 10110
            wan-b:  # uplink isp-b
              routes:
                - to: default
                  via: 10.2.0.1
                  from: 10.2.0.2
                  table: 102
                - to: 10.2.0.0/24
                  from: 10.2.0.2
                  scope: link
                  table: 102
              routing-policy:
                - from: 10.2.0.2  # reply:isp-b
                  table: 102
                  priority: 10001
    """).replace("{RESILIENT}", RESILIENT)


def test_every_rule_kind_lands_in_yaml_or_in_the_command_comment() -> None:
    text = render(EVERY_KIND)
    data: dict[str, Any] = yaml.safe_load(text)
    ethernets = data["network"]["ethernets"]
    assert list(ethernets) == ["wan-a", "ppp0", "dhcp0"]
    policy = {
        ifname: [
            (r.get("from"), r.get("to"), r.get("mark"), r["table"], r["priority"])
            for r in eth.get("routing-policy", [])
        ]
        for ifname, eth in ethernets.items()
    }
    assert policy == {
        "wan-a": [
            ("10.1.0.2", None, None, 101, 10000),  # reply:isp-a
            (None, "203.0.113.0/24", None, 254, 10120),  # bank: main is no uplink's table
            ("0.0.0.0/0", None, 32, 101, 10140),  # marked
            ("2001:db8::/32", None, None, 254, 10160),  # v6
            ("0.0.0.0/0", None, None, 200, 10170),  # rest
        ],
        "ppp0": [("100.64.9.9", None, None, 102, 10001), ("192.0.2.50", None, None, 102, 10110)],
        "dhcp0": [("10.5.0.77", None, None, 103, 10002)],
    }
    assert ethernets["ppp0"]["routes"] == [
        {"to": "default", "from": "100.64.9.9", "scope": "link", "table": 102}
    ]
    assert ethernets["dhcp0"]["routes"][0] == {
        "to": "default",
        "via": "10.5.0.1",
        "from": "10.5.0.77",
        "table": 103,
    }
    assert "#   - rule web (10130): iif, ipproto, port matches\n" in text
    assert "#   - rule masked (10150): a mark mask or mark 0\n" in text
    assert "#   ip rule add priority 10150 fwmark 0x20/0xf0 lookup main proto 236\n" in text
    assert "#   ip nexthop add id 248316006 dev ppp0 proto 236\n" in text


def netplan_generate(text: str, root: Path) -> dict[str, str]:
    """Run Debian's `netplan generate` on the YAML; the networkd files it writes."""
    if shutil.which("netplan") is None:
        pytest.skip("netplan not installed (Debian: apt-get install netplan.io)")
    conf = root / "etc/netplan" / netplan.FILENAME
    conf.parent.mkdir(parents=True)
    conf.write_text(text)
    conf.chmod(0o600)  # netplan warns about world-readable configs
    r = subprocess.run(
        ["netplan", "generate", "--root-dir", str(root)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    out = root / "run/systemd/network"
    return {p.name: p.read_text() for p in sorted(out.glob("*.network"))}


def sections(text: str, name: str) -> list[dict[str, str]]:
    """The key=value pairs of every [name] section of a networkd file."""
    found = []
    for block in re.split(r"^\[", text, flags=re.M)[1:]:
        header, _, body = block.partition("]\n")
        if header == name:
            found.append(dict(line.split("=", 1) for line in body.splitlines() if "=" in line))
    return found


def test_netplan_generates_the_lab_tables_and_rules(tmp_path: Path) -> None:
    files = netplan_generate(render(LAB), tmp_path)
    assert sorted(files) == ["10-netplan-wan-a.network", "10-netplan-wan-b.network"]
    wan_a = files["10-netplan-wan-a.network"]
    assert sections(wan_a, "RoutingPolicyRule") == [
        {"From": "10.1.0.2", "Table": "101", "Priority": "10000"},
        {"From": "0.0.0.0/0", "Table": "200", "Priority": "10110"},
    ]
    assert sections(wan_a, "Route") == [
        {
            "Destination": "0.0.0.0/0",
            "Gateway": "10.1.0.1",
            "PreferredSource": "10.1.0.2",
            "Table": "101",
        },
        {
            "Destination": "10.1.0.0/24",
            "PreferredSource": "10.1.0.2",
            "Scope": "link",
            "Table": "101",
        },
    ]


def test_netplan_accepts_every_rule_kind(tmp_path: Path) -> None:
    files = netplan_generate(render(EVERY_KIND), tmp_path)
    rules = sections(files["10-netplan-wan-a.network"], "RoutingPolicyRule")
    assert {"From": "0.0.0.0/0", "Table": "101", "Priority": "10140", "FirewallMark": "32"} in rules
    assert {"From": "2001:db8::/32", "Table": "254", "Priority": "10160"} in rules
    ppp = sections(files["10-netplan-ppp0.network"], "Route")
    assert ppp == [
        {
            "Destination": "0.0.0.0/0",
            "PreferredSource": "100.64.9.9",
            "Scope": "link",
            "Table": "102",
        }
    ]


def test_dual_stack_lands_in_yaml_and_in_the_command_comment() -> None:
    text = render(DUAL, FACTS6)
    data: dict[str, Any] = yaml.safe_load(text)
    ethernets = data["network"]["ethernets"]
    policy = [
        (r.get("from"), r.get("to"), r["table"]) for r in ethernets["wan-a"]["routing-policy"]
    ]
    assert policy == [
        ("10.1.0.2", None, 101),
        ("2001:db8:1::2", None, 101),
        (None, "2001:db8:88::/48", 254),
        ("0.0.0.0/0", None, 200),  # everything-else, once per family
        ("::/0", None, 200),
    ]
    assert "`from: 0.0.0.0/0` and `from: ::/0` are `from all`." in text
    assert ethernets["wan-a"]["routes"][1] == {
        "to": "default",
        "via": "fe80::1",
        "from": "2001:db8:1::2",
        "metric": 1024,
        "table": 101,
    }
    assert ethernets["ppp6"]["routes"] == [
        {"to": "default", "from": "2001:db8:9::9", "metric": 1024, "table": 103}
    ]
    # gateway6: ra: advertisements accepted; the table keeps the router of export time.
    assert ethernets["ra0"]["accept-ra"] is True
    assert ethernets["ra0"]["routes"][1]["via"] == "fe80::4"
    assert "        - to: default  # the advertised router at export time\n" in text
    # A rule both families have is one reason, with both commands.
    assert text.count("#   - rule local (10100): suppress_prefixlength 0\n") == 1
    assert (
        "#   ip -6 rule add priority 10100 lookup main suppress_prefixlength 0 proto 236\n" in text
    )
    assert "#   ip rule add priority 10100 lookup main suppress_prefixlength 0 proto 236\n" in text
    assert "#   ip -6 nexthop add id 248332391 dev ppp6 proto 236\n" in text


def test_netplan_generates_the_dual_stack_policy(tmp_path: Path) -> None:
    files = netplan_generate(render(DUAL, FACTS6), tmp_path)
    wan_a = files["10-netplan-wan-a.network"]
    assert {"From": "::/0", "Table": "200", "Priority": "10130"} in sections(
        wan_a, "RoutingPolicyRule"
    )
    assert {
        "Destination": "::/0",
        "Gateway": "fe80::1",
        "PreferredSource": "2001:db8:1::2",
        "Metric": "1024",
        "Table": "101",
    } in sections(wan_a, "Route")
    ra0 = files["10-netplan-ra0.network"]
    assert sections(ra0, "Network")[0]["IPv6AcceptRA"] == "yes"
    # netplan adds Scope=link to a route without a gateway; IPv6 routes have no scope.
    assert sections(files["10-netplan-ppp6.network"], "Route") == [
        {
            "Destination": "::/0",
            "PreferredSource": "2001:db8:9::9",
            "Scope": "link",
            "Metric": "1024",
            "Table": "103",
        }
    ]
