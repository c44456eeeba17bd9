"""Golden: the connection marks' rules and table in the desired state (YAML in, exact out)."""

from __future__ import annotations

import textwrap
from dataclasses import replace

from ecmpd.config import Config, parse_config
from ecmpd.connections import ending_uplinks, without_connections
from ecmpd.desired import desired_state
from ecmpd.export.iptext import command
from ecmpd.model import DesiredState, Family, NftTable
from tests.golden.fixtures import FACTS, FACTS6

THREE = """
    mode: router
    uplinks:
      - {name: isp-a, interface: wan-a, gateway: 10.1.0.1}
      - {name: isp-b, interface: wan-b, gateway: 10.2.0.1, weight: 2}
      - {name: lte, interface: ppp0, on_failure: wait}
"""


def load(yaml_text: str) -> Config:
    return parse_config(textwrap.dedent(yaml_text), "ecmpd.yaml")


def mark_rules(state: DesiredState) -> list[str]:
    """The rules without_connections drops, as `ip rule` commands in priority order."""
    kept = without_connections(state).rules
    ours = sorted(state.rules - kept, key=lambda r: (r.family, r.priority, r.fwmark or 0))
    return [command("add", r) for r in ours]


def table(state: DesiredState) -> NftTable:
    (nft,) = state.nft
    return nft


def test_each_uplink_gets_a_mark_rule_beside_its_reply_rule() -> None:
    state = desired_state(load(THREE), {}, FACTS)
    assert mark_rules(state) == [
        "ip rule add priority 10000 fwmark 0x65000000/0xff000000 lookup 101 proto 236",
        "ip rule add priority 10000 fwmark 0xff000000/0xff000000 lookup main proto 236",
        "ip rule add priority 10001 fwmark 0x66000000/0xff000000 lookup 102 proto 236",
        "ip rule add priority 10002 fwmark 0x67000000/0xff000000 lookup 103 proto 236",
    ]
    assert table(state) == NftTable(
        mask=0xFF000000,
        marks=(("ppp0", 0x67000000), ("wan-a", 0x65000000), ("wan-b", 0x66000000)),
        masquerade=("ppp0", "wan-a", "wan-b"),
    )
    assert state.mark_slots == (("isp-a", 101), ("isp-b", 102), ("lte", 103))


def test_the_marks_stay_while_an_uplink_is_down() -> None:
    """Only the group changes: a failover is not made longer by the connection marks."""
    up = desired_state(load(THREE), {}, FACTS)
    down = desired_state(load(THREE), {"isp-a": False}, FACTS)
    assert up.rules == down.rules and up.nft == down.nft


def test_only_reset_uplinks_that_left_service_end_their_connections() -> None:
    config = load(THREE)
    # lte waits (on_failure: wait); a drained uplink is not passed at all.
    assert ending_uplinks(config, {"isp-a", "lte"}) == {"isp-a"}
    ending = {Family.INET: {"isp-a"}}
    state = desired_state(config, {"isp-a": False}, FACTS, ending=ending)
    assert table(state).reset4 == (0x65000000,) and table(state).reset6 == ()


def test_an_uplink_keeps_its_mark_when_a_reload_renumbers_its_table() -> None:
    before = desired_state(load(THREE), {}, FACTS)
    # isp-a goes: isp-b's allocated table becomes 101, but its mark stays 0x66000000.
    after_yaml = """
        mode: router
        uplinks:
          - {name: isp-b, interface: wan-b, gateway: 10.2.0.1, weight: 2}
          - {name: lte, interface: ppp0}
    """
    recorded = replace(FACTS, mark_slots=before.mark_slots)
    after = desired_state(load(after_yaml), {}, recorded)
    assert [r for r in mark_rules(after) if "main" not in r] == [
        "ip rule add priority 10000 fwmark 0x66000000/0xff000000 lookup 101 proto 236",
        "ip rule add priority 10001 fwmark 0x67000000/0xff000000 lookup 102 proto 236",
    ]
    # Without the record, the table id decides and the connections would move.
    fresh = desired_state(load(after_yaml), {}, FACTS)
    assert "fwmark 0x65000000/0xff000000 lookup 101" in mark_rules(fresh)[0]


def test_a_configured_range_and_ipv6() -> None:
    config = load("""
        connections: {mark: 0x0000f000}
        uplinks:
          - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, gateway6: "fe80::1"}
          - {name: isp-b, interface: wan-b, gateway: 10.2.0.1, table: 7}
    """)
    state = desired_state(config, {}, FACTS6, ending={Family.INET6: {"isp-a", "isp-b"}})
    # Table 101 does not fit 4 bits: isp-a takes the lowest free slot, isp-b its table id.
    assert mark_rules(state) == [
        "ip rule add priority 10000 fwmark 0x1000/0xf000 lookup 101 proto 236",
        "ip rule add priority 10000 fwmark 0xf000/0xf000 lookup main proto 236",
        "ip rule add priority 10001 fwmark 0x7000/0xf000 lookup 7 proto 236",
        "ip -6 rule add priority 10000 fwmark 0x1000/0xf000 lookup 101 proto 236",
        "ip -6 rule add priority 10000 fwmark 0xf000/0xf000 lookup main proto 236",
    ]
    # isp-b carries no IPv6: none of its IPv6 connections to end.
    assert table(state).reset6 == (0x1000,)
    assert table(state).masquerade == ()  # host mode
