"""The failover order in the desired state: tiers x health, pin fallback lists, caps, spillover."""

from __future__ import annotations

import itertools
from textwrap import dedent

import pytest

from ecmpd.config import Config, parse_config
from ecmpd.desired import desired_state, nexthop_id
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.model import DesiredState, Family, RouteType, RuleAction
from ecmpd.order import OrderState, Role, roles
from tests.unit.fixtures import wan_facts

# fiber, cable: tier 1 (weights 2:1); lte: tier 2; sat: tier 3.
NAMES = ("fiber", "cable", "lte", "sat")
TABLES = {"fiber": 101, "cable": 102, "lte": 103, "sat": 104}
FACTS = wan_facts(4)


def config(extra: str = "", *, when_all_down: str = "keep", v6: bool = False) -> Config:
    uplinks = ""
    for i, (name, tier, weight) in enumerate(
        (("fiber", 1, 2), ("cable", 1, 1), ("lte", 2, 1), ("sat", 3, 1)), start=1
    ):
        uplinks += (
            f"  - {{name: {name}, interface: wan{i}, gateway: 10.{i}.0.1, tier: {tier},"
            f" weight: {weight}, table: {TABLES[name]}"
            + (f", gateway6: '2001:db8:{i}::1'" if v6 else "")
            + "}\n"
        )
    text = f"balancer: {{when_all_down: {when_all_down}}}\nuplinks:\n{uplinks}{dedent(extra)}"
    return parse_config(text)


def members(state: DesiredState, family: Family = Family.INET) -> set[str] | None:
    """The uplinks of the balancer group, None when there is no group."""
    by_id = {nexthop_id(t, family): n for n, t in TABLES.items()}
    group = next((g for g in state.groups if g.id == nexthop_id(200, family)), None)
    return None if group is None else {by_id[m] for m, _ in group.members}


def expected_members(up: dict[str, bool]) -> set[str] | None:
    """The model the table below is checked against: lowest tier with one in service."""
    for tier in (("fiber", "cable"), ("lte",), ("sat",)):
        carrying = {n for n in tier if up[n]}
        if carrying:
            return carrying
    return None


@pytest.mark.parametrize(
    "states", list(itertools.product((True, False), repeat=len(NAMES))), ids=str
)
def test_tiers_times_health(states: tuple[bool, ...]) -> None:
    """Every combination of health: the balancer carries exactly the lowest tier up."""
    up = dict(zip(NAMES, states, strict=True))
    cfg = config(when_all_down="unreachable")
    state = desired_state(cfg, up, FACTS)
    expected = expected_members(up)
    assert members(state) == expected
    balancer = [r for r in state.routes if r.table == 200]
    if expected is None:
        assert [r.type for r in balancer] == [RouteType.UNREACHABLE]
    else:
        assert [r.nhid for r in balancer] == [nexthop_id(200)]


def test_weights_apply_within_the_tier() -> None:
    state = desired_state(config(), {}, FACTS)
    group = next(g for g in state.groups if g.id == nexthop_id(200))
    assert group.members == ((nexthop_id(101), 2), (nexthop_id(102), 1))


def test_when_all_down_keep_keeps_the_lowest_usable_tier() -> None:
    """Every check failing may be the checks' fault: keep tier 1, do not wake the backup."""
    down = dict.fromkeys(NAMES, False)
    assert members(desired_state(config(), down, FACTS)) == {"fiber", "cable"}


def test_when_all_down_main_withdraws_the_route() -> None:
    state = desired_state(config(when_all_down="main"), dict.fromkeys(NAMES, False), FACTS)
    assert members(state) is None and not [r for r in state.routes if r.table == 200]


def test_when_all_down_keep_with_no_tier_1_carrier_keeps_the_next_usable_tier() -> None:
    facts = KernelFacts(
        interfaces={
            name: InterfaceFacts(
                iface.name,
                iface.index,
                addresses=iface.addresses,
                carrier=name not in {"wan1", "wan2"},
            )
            for name, iface in FACTS.interfaces.items()
        }
    )
    state = desired_state(config(), dict.fromkeys(NAMES, False), facts)
    assert members(state) == {"lte"}


def test_families_choose_their_tier_apart() -> None:
    """Health is per family: tier 1 down in IPv6 alone hands IPv6 (only) to tier 2."""
    cfg = config(v6=True)
    health6 = {"fiber": False, "cable": False}
    state = desired_state(cfg, {}, FACTS, health6)
    assert members(state, Family.INET) == {"fiber", "cable"}
    assert members(state, Family.INET6) == {"lte"}


def test_an_uplink_over_its_cap_is_the_last_resort() -> None:
    cfg = config()
    order = OrderState(last_resort=frozenset({"lte"}))
    tier1_down = {"fiber": False, "cable": False}
    assert members(desired_state(cfg, tier1_down, FACTS, order=order)) == {"sat"}
    all_down = {**tier1_down, "sat": False}
    assert members(desired_state(cfg, all_down, FACTS, order=order)) == {"lte"}


def test_spilling_tier_adds_the_next_tier_in_service() -> None:
    cfg = config()
    spill = OrderState(spilling=frozenset({1}))
    assert members(desired_state(cfg, {}, FACTS, order=spill)) == {"fiber", "cable", "lte"}
    # The next tier is the next one with an uplink in service.
    lte_down = {"lte": False}
    assert members(desired_state(cfg, lte_down, FACTS, order=spill)) == {"fiber", "cable", "sat"}
    # A spilling tier that no longer carries changes nothing.
    tier1_down = {"fiber": False, "cable": False}
    assert members(desired_state(cfg, tier1_down, FACTS, order=spill)) == {"lte"}


PINS = """\
rules:
  - {name: vpn, action: pin, from: 10.9.0.5, uplink: [fiber, cable, lte]}
  - {name: bank, action: pin, from: 10.9.0.6, uplink: [cable, fiber], strict: true}
  - {name: everything-else, action: balance}
"""


def pin_tables(up: dict[str, bool]) -> dict[str, int | str | None]:
    """Per pin: the table its rule looks up, 'unreachable', or None when withdrawn."""
    state = desired_state(config(PINS), up, FACTS)
    names = dict(state.rule_names)
    out: dict[str, int | str | None] = {"vpn": None, "bank": None}
    for rule in state.rules:
        name = names[rule.priority]
        if name in out:
            out[name] = "unreachable" if rule.action is RuleAction.UNREACHABLE else rule.table
    return out


@pytest.mark.parametrize(
    "states", list(itertools.product((True, False), repeat=len(NAMES))), ids=str
)
def test_pin_fallback_order(states: tuple[bool, ...]) -> None:
    """The first of the list in service, one at a time; strict refuses when none is."""
    up = dict(zip(NAMES, states, strict=True))
    vpn = next((TABLES[n] for n in ("fiber", "cable", "lte") if up[n]), None)
    bank = next((TABLES[n] for n in ("cable", "fiber") if up[n]), "unreachable")
    assert pin_tables(up) == {"vpn": vpn, "bank": bank}


def test_a_pin_list_skips_uplinks_without_the_family() -> None:
    cfg = parse_config(
        dedent("""\
        uplinks:
          - {name: fiber, interface: wan1, gateway: 10.1.0.1, table: 101}
          - {name: cable, interface: wan2, gateway: 10.2.0.1, gateway6: '2001:db8:2::1',
             table: 102}
        rules:
          - {name: vpn, action: pin, uplink: [fiber, cable]}
        """)
    )
    state = desired_state(cfg, {}, FACTS)
    by_family = {r.family: r.table for r in state.rules if r.priority == 10100}
    assert by_family == {Family.INET: 101, Family.INET6: 102}


def test_roles() -> None:
    got = roles(NAMES, carrying={"fiber"}, in_service={"fiber", "cable", "lte"}, drained={"cable"})
    assert got == {
        "fiber": Role.CARRYING,
        "cable": Role.DRAINED,
        "lte": Role.STANDBY,
        "sat": Role.DOWN,
    }
