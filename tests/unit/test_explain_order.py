"""explain names the failover order: a pin list's position, the balancer's backup tier."""

from __future__ import annotations

from ipaddress import ip_address

from ecmpd.cli.explain import describe, failover_order
from ecmpd.config import parse_config
from ecmpd.explain import Flow

CONFIG = parse_config("""\
uplinks:
  - {name: fiber, interface: wan-a, gateway: 10.1.0.1, table: 101}
  - {name: cable, interface: wan-b, gateway: 10.2.0.1, table: 102}
  - {name: lte, interface: wan-c, gateway: 10.3.0.1, table: 103, tier: 2}
rules:
  - {name: vpn, action: pin, from: 10.200.1.5, uplink: [fiber, cable], strict: true}
  - {name: bank, action: pin, from: 10.200.1.6, uplink: lte}
  - {name: everything-else, action: balance}
""")
FLOW = Flow(dst=ip_address("198.51.100.1"), src=ip_address("10.200.1.5"))


def line(rule: str, table: int | None, uplink: str | None) -> str:
    result = {
        "uplink": uplink,
        "candidates": [],
        "rule": rule,
        "priority": 10100,
        "table": table,
        "interface": "wan-x",
        "gateway": "10.9.0.1",
        "error": None if table else "unreachable",
        **failover_order(CONFIG, rule, table, uplink),
    }
    return describe(FLOW, result)


def test_pin_list_position() -> None:
    assert failover_order(CONFIG, "vpn", 102, "cable") == {
        "tier": 1,
        "backup_tier": None,
        "fallback": ["fiber", "cable"],
        "fallback_position": 2,
    }
    assert line("vpn", 102, "cable").endswith("table 102), fallback 2 of fiber, cable")
    assert line("vpn", None, None).endswith("fallback list fiber, cable: none in service")


def test_backup_tier_is_named_for_the_balancer_only() -> None:
    assert line("everything-else", 200, "lte").endswith(
        "; backup tier 2 (no lower tier has an uplink in service)"
    )
    assert line("everything-else", 200, "fiber").endswith("table 200)")
    # A pin to a tier-2 uplink is the pin's choice, not a failover.
    assert line("bank", 103, "lte").endswith("table 103)")
