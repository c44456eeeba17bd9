"""Golden: a backup tier and a pin with a fallback list -> the exact `ip` commands."""

from __future__ import annotations

import textwrap

from ecmpd.config import parse_config
from ecmpd.connections import without_connections
from ecmpd.desired import desired_state
from ecmpd.export.iptext import state_commands
from tests.golden.fixtures import FACTS

TIERED = """
    uplinks:
      - name: fiber
        interface: wan-a
        gateway: 10.1.0.1
      - name: lte
        interface: dhcp0
        gateway: dhcp
        tier: 2
        metered: true
    rules:
      - {name: local, action: bypass}
      - {name: vpn, action: pin, from: 10.200.1.5, uplink: [fiber, lte]}
      - {name: everything-else, action: balance}
"""


def commands(health: dict[str, bool]) -> list[str]:
    config = parse_config(textwrap.dedent(TIERED), "ecmpd.yaml")
    return state_commands(without_connections(desired_state(config, health, FACTS)))


def test_the_backup_stands_by_ready() -> None:
    """lte's nexthop, table and reply rule exist; the group and the pin use fiber alone."""
    assert commands({}) == [
        "sysctl -w net.ipv4.conf.dhcp0.rp_filter=2",
        "sysctl -w net.ipv4.conf.wan-a.rp_filter=2",
        "sysctl -w net.ipv4.fib_multipath_hash_policy=1",
        "ip nexthop add id 248316005 via 10.1.0.1 dev wan-a proto 236",
        "ip nexthop add id 248316006 via 10.5.0.1 dev dhcp0 proto 236",
        "ip nexthop add id 248316104 group 248316005,1 type resilient buckets 512"
        " idle_timer 0 unbalanced_timer 0 proto 236",
        "ip route add default via 10.1.0.1 dev wan-a src 10.1.0.2 table 101 proto 236",
        "ip route add 10.1.0.0/24 dev wan-a scope link src 10.1.0.2 table 101 proto 236",
        "ip route add default via 10.5.0.1 dev dhcp0 src 10.5.0.77 table 102 proto 236",
        "ip route add 10.5.0.0/24 dev dhcp0 scope link src 10.5.0.77 table 102 proto 236",
        "ip route add default nhid 248316104 table 200 proto 236",
        "ip rule add priority 10000 from 10.1.0.2 lookup 101 proto 236",
        "ip rule add priority 10001 from 10.5.0.77 lookup 102 proto 236",
        "ip rule add priority 10100 lookup main suppress_prefixlength 0 proto 236",
        "ip rule add priority 10110 from 10.200.1.5 lookup 101 proto 236",
        "ip rule add priority 10120 lookup 200 proto 236",
    ]


def test_tier_2_takes_over_by_the_group_and_the_pin_alone() -> None:
    """fiber down: only the group's members and the pin's table change."""
    up, down = commands({}), commands({"fiber": False})
    changed = [(a, b) for a, b in zip(up, down, strict=True) if a != b]
    assert changed == [
        (
            "ip nexthop add id 248316104 group 248316005,1 type resilient buckets 512"
            " idle_timer 0 unbalanced_timer 0 proto 236",
            "ip nexthop add id 248316104 group 248316006,1 type resilient buckets 512"
            " idle_timer 0 unbalanced_timer 0 proto 236",
        ),
        (
            "ip rule add priority 10110 from 10.200.1.5 lookup 101 proto 236",
            "ip rule add priority 10110 from 10.200.1.5 lookup 102 proto 236",
        ),
    ]
