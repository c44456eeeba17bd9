"""A pin's connections on a fallback uplink: which get resets once its first choice returns."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_network
from textwrap import dedent

import pytest

from ecmpd.config import Config, parse_config
from ecmpd.desired import desired_state, uplink_plans
from ecmpd.kernel.ctmessages import IPS_DST_NAT, IPS_SEEN_REPLY, Flow
from ecmpd.kernel.resets import Ending
from ecmpd.model import ALL_PORTS, Family, PinReset, PortRange
from ecmpd.pinresets import pin_resets
from tests.unit.fixtures import wan_facts

FACTS = wan_facts(3)
VALUES = {"fiber": 0x01000000, "cable": 0x02000000, "lte": 0x03000000}
V4, V6 = Family.INET, Family.INET6
CLIENT = ip_network("192.168.10.50/32")
ANY4, ANY6 = ip_network("0.0.0.0/0"), ip_network("::/0")


def config(rule: str, cable: str = "failback: reset") -> Config:
    text = f"""
    uplinks:
      - {{name: fiber, interface: wan1, gateway: 10.1.0.1, gateway6: "2001:db8:1::1"}}
      - {{name: cable, interface: wan2, gateway: 10.2.0.1, gateway6: "2001:db8:2::1", {cable}}}
      - {{name: lte, interface: wan3, gateway: 10.3.0.1, tier: 2, metered: true}}
    rules:
      - {rule}
      - {{name: rest, action: balance}}
    """
    return parse_config(dedent(text))


def resets(cfg: Config, down: set[str]) -> dict[Family, tuple[PinReset, ...]]:
    health = {n: n not in down for n in VALUES}
    return pin_resets(cfg, uplink_plans(cfg, health, FACTS, health), VALUES)


def pin(mark: int) -> PinReset:
    """The VPN client's whole traffic on the uplink of this mark."""
    return PinReset(CLIENT, ANY4, ALL_PORTS, ALL_PORTS, mark)


VPN = "{name: vpn, action: pin, from: 192.168.10.50, uplink: [fiber, cable, lte]}"


@pytest.mark.parametrize(
    ("down", "expected"),
    [
        # fiber carries the pin: its connections on cable (failback reset) and lte
        # (metered: reset by default) are reset; fiber's own never.
        (set(), {pin(VALUES["cable"]), pin(VALUES["lte"])}),
        # cable carries it: only lte's (listed after cable); fiber is down (on_failure).
        ({"fiber"}, {pin(VALUES["lte"])}),
        ({"fiber", "cable"}, set()),  # lte carries it: nothing after it
        ({"fiber", "lte"}, set()),  # lte down: on_failure decides about its connections
        ({"fiber", "cable", "lte"}, set()),  # no choice: the pin is withdrawn
    ],
)
def test_the_uplinks_after_the_pins_choice_with_failback_reset(
    down: set[str], expected: set[PinReset]
) -> None:
    got = resets(config(VPN), down)
    assert set(got[V4]) == expected
    assert got[V6] == ()  # an IPv4 pin has nothing in IPv6


def test_failback_keep_keeps_and_a_drained_uplink_is_left_alone() -> None:
    cfg = config(VPN, cable="failback: keep")
    assert set(resets(cfg, set())[V4]) == {pin(VALUES["lte"])}
    health = {n: n != "lte" for n in VALUES}  # lte drained (or down): graceful
    plans = uplink_plans(cfg, health, FACTS, health)
    assert pin_resets(cfg, plans, VALUES)[V4] == ()


def test_a_non_strict_pin_covers_the_uplinks_its_traffic_fell_through_to() -> None:
    short = "{name: vpn, action: pin, from: 192.168.10.50, uplink: [fiber]}"
    assert set(resets(config(short), set())[V4]) == {pin(VALUES["cable"]), pin(VALUES["lte"])}
    strict = short.replace("uplink: [fiber]", "uplink: [fiber], strict: true")
    assert resets(config(strict), set())[V4] == ()


def test_the_key_is_the_pins_match_in_each_of_its_families() -> None:
    web = "{name: web, action: pin, to: 198.51.100.0/24, proto: tcp, dport: 443, "
    web += "uplink: [fiber, cable], strict: true}"
    (got,) = resets(config(web), set())[V4]
    assert got == PinReset(
        ANY4, ip_network("198.51.100.0/24"), ALL_PORTS, PortRange(443, 443), VALUES["cable"]
    )
    both = "{name: all, action: pin, proto: tcp, sport: 1000-2000, uplink: [fiber, cable]}"
    got6 = resets(config(both), set())
    ports = PortRange(1000, 2000)
    # Not strict: lte (metered, not listed) too. In IPv6, lte carries nothing.
    assert got6[V4] == tuple(
        PinReset(ANY4, ANY4, ports, ALL_PORTS, VALUES[n]) for n in ("cable", "lte")
    )
    assert got6[V6] == (PinReset(ANY6, ANY6, ports, ALL_PORTS, VALUES["cable"]),)


@pytest.mark.parametrize("extra", ["iif: lan0", "fwmark: 0x10", "proto: udp", "proto: icmp"])
def test_a_pin_the_key_cannot_say_gets_no_resets(extra: str) -> None:
    rule = f"{{name: vpn, action: pin, from: 192.168.10.50, uplink: [fiber, cable], {extra}}}"
    assert resets(config(rule), set()) == {V4: (), V6: ()}


def test_the_desired_table_holds_them() -> None:
    cfg = config(VPN)
    health = {n: True for n in VALUES}
    (table,) = desired_state(cfg, health, FACTS).nft
    assert len(table.pins4) == 2 and table.pins6 == ()


def flow(src: str, dst: str, dport: int, proto: int = 6, status: int = IPS_SEEN_REPLY) -> Flow:
    return Flow(
        proto=proto,
        orig_src=IPv4Address(src),
        orig_dst=IPv4Address(dst),
        sport=40000,
        dport=dport,
        reply_dst=IPv4Address("10.2.0.2"),
        ct_id=1,
        zone=None,
        orig_tuple=b"x",
        status=status,
    )


def test_an_ending_limited_to_a_pin_covers_its_tcp_connections_only() -> None:
    web = PinReset(
        ANY4, ip_network("198.51.100.0/24"), ALL_PORTS, PortRange(443, 443), VALUES["cable"]
    )
    ending = Ending(
        VALUES["cable"], 0xFF000000, 0xFF000000, (V4,), only=(pin(VALUES["cable"]), web)
    )
    assert ending.covers(flow("192.168.10.50", "203.0.113.9", 22))  # the pinned client
    assert ending.covers(flow("192.168.10.7", "198.51.100.3", 443))  # the pinned service
    assert not ending.covers(flow("192.168.10.7", "198.51.100.3", 80))
    assert not ending.covers(flow("192.168.10.7", "203.0.113.9", 443))
    assert not ending.covers(flow("192.168.10.50", "203.0.113.9", 53, proto=17))  # UDP stays
    assert not ending.covers(flow("192.168.10.50", "203.0.113.9", 22, status=IPS_DST_NAT))
    v6 = PinReset(ANY6, ANY6, ALL_PORTS, ALL_PORTS, VALUES["cable"])
    assert not v6.covers(IPv4Address("192.168.10.50"), IPv4Address("203.0.113.9"), 1, 2)
    assert v6.covers(IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2"), 1, 2)
    everything = Ending(VALUES["cable"], 0xFF000000, 0xFF000000, (V4,))
    assert everything.covers(flow("192.168.10.7", "203.0.113.9", 53, proto=17))
