"""announce: the default route FRR imports exists exactly while enough uplinks serve.

Its changes are ordered apart from everything else: withdrawn first, restored last,
changed by delete-then-add (FRR 8.4 loses an imported route replaced in place).
"""

from __future__ import annotations

import textwrap
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecmpd.announce import known_uplinks
from ecmpd.config import Config, ConfigError, parse_config
from ecmpd.desired import desired_state
from ecmpd.model import ANNOUNCE_MAIN_METRIC, DesiredState, Family, NexthopGroup, Route, RouteType
from ecmpd.plan import Op, OpKind, diff
from tests.golden.fixtures import FACTS6
from tests.unit.fakekernel import FakeKernel, states

EDGE = """
    uplinks:
      - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, gateway6: "fe80::1", table: 101}
      - {name: isp-b, interface: wan-b, gateway: 10.2.0.1, gateway6: "2001:db8:2::1", table: 102}
    balancer: {when_all_down: unreachable}
    announce: {table: 150}
"""
BOTH = {Family.INET: {"isp-a", "isp-b"}, Family.INET6: {"isp-a", "isp-b"}}


def config(text: str = EDGE) -> Config:
    return parse_config(textwrap.dedent(text), "ecmpd.yaml")


def announced(
    health: dict[str, bool],
    known: dict[Family, set[str]] | None = None,
    when_all_down: str = "unreachable",
    health6: dict[str, bool] | None = None,
) -> dict[Family, Route]:
    text = EDGE.replace("when_all_down: unreachable", f"when_all_down: {when_all_down}")
    state = desired_state(config(text=text), health, FACTS6, health6, known=known)
    return {r.family: r for r in state.routes if r.table == 150}


def test_a_plain_gateway_route_per_family_while_an_uplink_serves() -> None:
    routes = announced({}, BOTH)
    assert routes[Family.INET] == Route(
        Family.INET, 150, IPv4Network("0.0.0.0/0"), ifname="wan-a", gateway=IPv4Address("10.1.0.1")
    )
    assert routes[Family.INET6] == Route(
        Family.INET6,
        150,
        IPv6Network("::/0"),
        ifname="wan-a",
        gateway=IPv6Address("fe80::1"),
        metric=1024,
    )
    assert all(r.nhid is None for r in routes.values())


def test_the_gateway_follows_the_first_uplink_in_service() -> None:
    routes = announced({"isp-a": False}, BOTH)
    assert routes[Family.INET].gateway == IPv4Address("10.2.0.1")
    assert routes[Family.INET6].ifname == "wan-b"


def test_withdrawn_when_no_uplink_serves_whatever_when_all_down_keeps() -> None:
    down = {"isp-a": False, "isp-b": False}
    assert announced(down, BOTH) == {}
    assert announced(down, BOTH, "keep") == {}
    assert announced(down, BOTH, "main") == {}


def test_per_family_health() -> None:
    """IPv6 down on both: ::/0 goes, 0.0.0.0/0 stays."""
    routes = announced({}, BOTH, health6={"isp-a": False, "isp-b": False})
    assert set(routes) == {Family.INET}


def test_unknown_uplinks_do_not_count() -> None:
    assert announced({}, {Family.INET: set(), Family.INET6: set()}) == {}
    routes = announced({}, {Family.INET: {"isp-b"}, Family.INET6: set()})
    assert set(routes) == {Family.INET}
    assert routes[Family.INET].gateway == IPv4Address("10.2.0.1")


def test_no_daemon_counts_every_uplink_as_apply_assumes() -> None:
    assert set(announced({})) == {Family.INET, Family.INET6}


def test_min_uplinks_per_family() -> None:
    two = "announce: {table: 150, min_uplinks: 2}\n"
    text = EDGE.replace("    announce: {table: 150}\n", "    " + two)
    state = desired_state(config(text=text), {"isp-a": False}, FACTS6, known=BOTH)
    assert not [r for r in state.routes if r.table == 150]
    mapping = "announce: {table: 150, min_uplinks: {ipv4: 2}}\n"
    text = EDGE.replace("    announce: {table: 150}\n", "    " + mapping)
    state = desired_state(config(text=text), {}, FACTS6, known=BOTH)
    assert {r.family for r in state.routes if r.table == 150} == {Family.INET}


@pytest.mark.parametrize(
    ("announce", "message"),
    [
        ("{table: 200}", "announce.table: table 200 is already the balancer table"),
        ("{table: 101}", "uplinks[0].table: table 101 is already the announce table"),
        ("{table: 150, min_uplinks: 3}", "3 for IPv4, but only 2 uplinks carry IPv4"),
        ("{table: 150, min_uplinks: {}}", "names neither ipv4 nor ipv6"),
        ("{table: 150, min_uplinks: {ipv5: 1}}", "announce.min_uplinks.ipv5"),
        ("{table: 254}", "announce.table: table 254 is the kernel's main table"),
        ("{min_uplinks: 1}", "announce.table"),
    ],
)
def test_bad_announce_names_its_field(announce: str, message: str) -> None:
    text = EDGE.replace("announce: {table: 150}", f"announce: {announce}")
    with pytest.raises(ConfigError) as err:
        config(text=text)
    assert message in str(err.value)


def test_automatic_uplink_tables_avoid_the_announce_table() -> None:
    text = """
        uplinks:
          - {name: a, interface: wan-a, gateway: 10.1.0.1}
        announce: {table: 100}
    """
    c = config(text=text)
    assert c.uplinks[0].table != 100
    assert 100 in c.tables()


# --- plan order -------------------------------------------------------------------


def _plan(before: dict[str, bool], after: dict[str, bool]) -> list[Op]:
    c = config()
    have = desired_state(c, before, FACTS6, known=BOTH)
    want = desired_state(c, after, FACTS6, known=BOTH)
    return diff(want, have)


def _is_announce(op: Op) -> bool:
    return isinstance(op.obj, Route) and op.obj.table == 150


def test_withdrawn_before_the_balancer_loses_its_last_uplink() -> None:
    ops = _plan({"isp-b": False}, {"isp-a": False, "isp-b": False})
    first_other = next(i for i, op in enumerate(ops) if not _is_announce(op))
    withdrawals = [i for i, op in enumerate(ops) if _is_announce(op)]
    assert withdrawals and max(withdrawals) < first_other
    assert all(ops[i].kind is OpKind.DELETE for i in withdrawals)
    # The balancer then turns unreachable (when_all_down: unreachable).
    assert any(isinstance(op.obj, Route) and op.obj.type is RouteType.UNREACHABLE for op in ops)


def test_restored_after_the_balancer_is_back() -> None:
    ops = _plan({"isp-a": False, "isp-b": False}, {"isp-b": False})
    last_other = max(i for i, op in enumerate(ops) if not _is_announce(op))
    restores = [i for i, op in enumerate(ops) if _is_announce(op)]
    assert restores and min(restores) > last_other
    assert all(ops[i].kind is OpKind.ADD for i in restores)
    balancer = [op for op in ops if isinstance(op.obj, NexthopGroup)]
    assert balancer and ops.index(balancer[0]) < min(restores)


def test_a_changed_gateway_is_deleted_then_added_never_replaced() -> None:
    ops = [op for op in _plan({}, {"isp-a": False}) if _is_announce(op)]
    pairs = [(op.kind, op.obj.family) for op in ops if isinstance(op.obj, Route)]
    assert sorted(zip(pairs[::2], pairs[1::2], strict=True)) == [
        ((OpKind.DELETE, Family.INET), (OpKind.ADD, Family.INET)),
        ((OpKind.DELETE, Family.INET6), (OpKind.ADD, Family.INET6)),
    ]


def test_a_failover_that_keeps_the_gateway_leaves_the_announce_alone() -> None:
    assert not [op for op in _plan({}, {"isp-b": False}) if _is_announce(op)]


@settings(max_examples=300, deadline=None)
@given(start=states(), target=states(), table=st.sampled_from([101, 200]))
def test_any_state_reaches_any_other_with_announce_changes_at_the_ends(
    start: DesiredState, target: DesiredState, table: int
) -> None:
    # An announce route is a plain route (never on a nexthop object).
    start, target = (
        replace(s, routes=frozenset(r for r in s.routes if r.table != table or r.nhid is None))
        for s in (start, target)
    )
    want = replace(target, announce_tables=frozenset({table}))
    kernel = FakeKernel.holding(start)
    ops = diff(want, start)
    announce = [
        i for i, op in enumerate(ops) if isinstance(op.obj, Route) and op.obj.table == table
    ]
    others = [i for i in range(len(ops)) if i not in announce]
    for i in announce:
        op = ops[i]
        assert op.kind is not OpKind.REPLACE
        if others and op.kind is OpKind.DELETE and op.obj.key not in {r.key for r in want.routes}:
            assert i < others[0]
        if others and op.kind is OpKind.ADD:
            assert i > others[-1]
    for op in ops:
        kernel.apply(op)
    assert kernel.state() == want


def test_unprobed_uplinks_count_only_where_a_restart_found_the_route() -> None:
    verdicts = {
        ("a", Family.INET): None,
        ("b", Family.INET): True,
        ("a", Family.INET6): None,
        ("b", Family.INET6): False,
    }
    assert known_uplinks(verdicts) == {Family.INET: {"b"}}
    assert known_uplinks(verdicts, {Family.INET6}) == {Family.INET: {"b"}, Family.INET6: {"a"}}


def test_table6_main_puts_ipv6_in_main_at_its_own_metric() -> None:
    """FRR 8.4 has no `ipv6 import-table`: ::/0 goes to main for `redistribute kernel`."""
    text = EDGE.replace("announce: {table: 150}", "announce: {table: 150, table6: main}")
    c = config(text=text)
    assert c.tables().count(150) == 1 and 254 not in c.tables()
    state = desired_state(c, {}, FACTS6, known=BOTH)
    six = [r for r in state.routes if r.family is Family.INET6 and r.table in (150, 200, 254)]
    assert {(r.table, r.metric) for r in six} == {(200, 1024), (254, ANNOUNCE_MAIN_METRIC)}
    assert state.announce_tables == {150, 254}
    withdrawn = desired_state(c, {"isp-a": False, "isp-b": False}, FACTS6, known=BOTH)
    ops = diff(withdrawn, state)
    assert [(op.kind, op.obj.table) for op in ops[:2] if isinstance(op.obj, Route)] == [
        (OpKind.DELETE, 254),
        (OpKind.DELETE, 150),
    ]


def test_table6_must_not_be_the_balancer_table() -> None:
    text = EDGE.replace("announce: {table: 150}", "announce: {table: 150, table6: 200}")
    with pytest.raises(ConfigError) as err:
        config(text=text)
    assert "announce.table6: table 200 is already the balancer table" in str(err.value)
