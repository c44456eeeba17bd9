"""Golden: announce -> the exact `ip` commands of the plans a failure and a heal run."""

from __future__ import annotations

import textwrap

from ecmpd.config import parse_config
from ecmpd.desired import desired_state
from ecmpd.export.iptext import op_command, state_commands
from ecmpd.model import Family
from ecmpd.plan import diff
from tests.golden.fixtures import FACTS6

EDGE = """
    uplinks:
      - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, gateway6: "fe80::1", table: 101}
      - {name: isp-b, interface: wan-b, gateway: 10.2.0.1, gateway6: "2001:db8:2::1", table: 102}
    balancer: {when_all_down: unreachable}
    announce: {table: 150, min_uplinks: {ipv4: 1, ipv6: 1}}
"""
KNOWN = {Family.INET: {"isp-a", "isp-b"}, Family.INET6: {"isp-a", "isp-b"}}


def plan(before: dict[str, bool], after: dict[str, bool]) -> list[str]:
    config = parse_config(textwrap.dedent(EDGE), "ecmpd.yaml")
    have = desired_state(config, before, FACTS6, before, known=KNOWN)
    want = desired_state(config, after, FACTS6, after, known=KNOWN)
    return [op_command(op) for op in diff(want, have)]


def test_the_announce_routes_come_last_from_scratch() -> None:
    config = parse_config(textwrap.dedent(EDGE), "ecmpd.yaml")
    commands = state_commands(desired_state(config, {}, FACTS6, known=KNOWN))
    assert [c for c in commands if "table 150" in c] == [
        "ip -6 route add default via fe80::1 dev wan-a metric 1024 table 150 proto 236",
        "ip route add default via 10.1.0.1 dev wan-a table 150 proto 236",
    ]


def test_the_first_uplink_fails_the_announce_moves_by_delete_then_add() -> None:
    assert plan({}, {"isp-a": False}) == [
        "ip nexthop replace id 248316104 group 248316006,1 type resilient buckets 512"
        " idle_timer 0 unbalanced_timer 0 proto 236",
        "ip nexthop replace id 248332488 group 248332390,1 type resilient buckets 512"
        " idle_timer 0 unbalanced_timer 0 proto 236",
        "ip -6 route del default via fe80::1 dev wan-a metric 1024 table 150 proto 236",
        "ip -6 route add default via 2001:db8:2::1 dev wan-b metric 1024 table 150 proto 236",
        "ip route del default via 10.1.0.1 dev wan-a table 150 proto 236",
        "ip route add default via 10.2.0.1 dev wan-b table 150 proto 236",
    ]


def test_the_last_uplink_fails_withdrawn_first() -> None:
    assert plan({"isp-a": False}, {"isp-a": False, "isp-b": False}) == [
        "ip -6 route del default via 2001:db8:2::1 dev wan-b metric 1024 table 150 proto 236",
        "ip route del default via 10.2.0.1 dev wan-b table 150 proto 236",
        "ip -6 route replace unreachable default dev lo metric 1024 table 200 proto 236",
        "ip route replace unreachable default table 200 proto 236",
        "ip nexthop del id 248316104",
        "ip nexthop del id 248332488",
    ]


def test_the_balancer_comes_back_then_the_announce() -> None:
    assert plan({"isp-a": False, "isp-b": False}, {"isp-a": False}) == [
        "ip nexthop add id 248316104 group 248316006,1 type resilient buckets 512"
        " idle_timer 0 unbalanced_timer 0 proto 236",
        "ip nexthop add id 248332488 group 248332390,1 type resilient buckets 512"
        " idle_timer 0 unbalanced_timer 0 proto 236",
        "ip -6 route replace default nhid 248332488 metric 1024 table 200 proto 236",
        "ip route replace default nhid 248316104 table 200 proto 236",
        "ip -6 route add default via 2001:db8:2::1 dev wan-b metric 1024 table 150 proto 236",
        "ip route add default via 10.2.0.1 dev wan-b table 150 proto 236",
    ]
